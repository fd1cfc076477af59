package fleet

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// TestProxyPartition: a relayed connection works, Partition cuts it and
// refuses new ones while the port stays bound, Heal lets new ones
// through again.
func TestProxyPartition(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	p, err := NewProxy("127.0.0.1:0", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	roundTrip := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "ping\n" {
			t.Errorf("echoed %q", line)
		}
		return err
	}
	before, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if err := roundTrip(before); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	p.Partition()
	if err := roundTrip(before); err == nil {
		t.Error("a connection made before the partition still works")
	}
	during, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatalf("the proxy's port is not bound during the partition: %v", err)
	}
	if err := roundTrip(during); err == nil {
		t.Error("a connection made during the partition works")
	}
	during.Close()
	if dropped, refused := p.Stats(); dropped != 1 || refused != 1 {
		t.Errorf("stats: %d dropped, %d refused; want 1 and 1", dropped, refused)
	}

	p.Heal()
	after, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if err := roundTrip(after); err != nil {
		t.Errorf("after Heal: %v", err)
	}
}

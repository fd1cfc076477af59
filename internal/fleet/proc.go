package fleet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one process the harness started, known by its PID. Every signal
// goes to that PID only; Restart starts the same command again with the
// same arguments and state (files) for the chaos suite.
type Proc struct {
	Name string // unique, e.g. "agent-1"
	Kind string // what CPU and memory are summed by: server, agent, redis, simulator

	path    string
	args    []string
	env     []string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // of the last exit
	starts int
}

// newProc describes a process; start it with Start.
func newProc(name, kind, logDir, path string, args, env []string) *Proc {
	return &Proc{Name: name, Kind: kind, path: path, args: args, env: env, logPath: filepath.Join(logDir, name+".log")}
}

// Start runs the process, its output appended to its log file. It dies
// with the harness (Pdeathsig), so a killed benchmark leaves nothing.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exitedLocked() {
		return fmt.Errorf("fleet: start %s: already running as pid %d", p.Name, p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("fleet: start %s: %w", p.Name, err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("fleet: start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.err = cmd, exited, nil
	p.starts++
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

func (p *Proc) exitedLocked() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// PID is the current process's ID, 0 before the first start.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process is alive (stopped counts as alive).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exitedLocked()
}

// Exited is closed when the current process ends.
func (p *Proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Err is how the last process ended (nil while running or after a clean exit).
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Signal sends sig to the process's PID.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return fmt.Errorf("fleet: signal %s: not running", p.Name)
	}
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("fleet: signal %s (pid %d): %w", p.Name, p.cmd.Process.Pid, err)
	}
	return nil
}

// Pause stops the process (SIGSTOP), as a hung host would; Resume continues it.
func (p *Proc) Pause() error  { return p.Signal(syscall.SIGSTOP) }
func (p *Proc) Resume() error { return p.Signal(syscall.SIGCONT) }

// Kill is kill -9, and waits for the process to be gone.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.Exited()
	return nil
}

// Stop asks the process to end (SIGTERM, after SIGCONT in case it is
// paused) and kills it after grace.
func (p *Proc) Stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	_ = p.Signal(syscall.SIGCONT)
	if err := p.Signal(syscall.SIGTERM); err != nil && p.Running() {
		return err
	}
	select {
	case <-p.Exited():
		return nil
	case <-time.After(grace):
	}
	if p.Running() {
		return p.Kill()
	}
	return nil
}

// Restart stops the process (SIGTERM, grace) and starts it again on the
// same arguments and files.
func (p *Proc) Restart(grace time.Duration) error {
	if err := p.Stop(grace); err != nil {
		return err
	}
	return p.Start()
}

// LogTail returns the last n bytes of the process's log, for errors.
func (p *Proc) LogTail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Usage is one reading of a process's CPU and memory from /proc.
type Usage struct {
	CPU    time.Duration // user + system
	RSS    int64         // bytes, now
	HWM    int64         // bytes, peak resident
	Exists bool
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTick = 100

// Sample reads the process's /proc/<pid>/stat and /proc/<pid>/status.
func (p *Proc) Sample() Usage {
	pid := p.PID()
	if pid == 0 || !p.Running() {
		return Usage{}
	}
	return readUsage(pid)
}

func readUsage(pid int) Usage {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Usage{}
	}
	u := Usage{Exists: true}
	// The command name may hold spaces: fields count from after its ')'.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
		f := strings.Fields(string(stat[i+1:]))
		// f[0] is field 3 (state); utime and stime are fields 14 and 15.
		if len(f) > 12 {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			u.CPU = time.Duration(ut+st) * time.Second / clockTick
		}
	}
	status, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return u
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			u.RSS = kib(v)
		case "VmHWM":
			u.HWM = kib(v)
		}
	}
	return u
}

func kib(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	return n * 1024
}

// stopAll stops procs in reverse start order; errors are joined.
func stopAll(procs []*Proc, grace time.Duration) error {
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(grace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

package krbkey

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/iana/patype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// KDCSalt is one PA-ETYPE-INFO2 entry announced by the KDC.
type KDCSalt struct {
	EType     int32
	Salt      string // empty for RC4
	S2KParams []byte // nil means the etype's default (4096 iterations for AES)
}

// maxReply bounds a KDC reply we are willing to read.
const maxReply = 1 << 20

// SaltsFromKDC asks the KDC at kdcAddr (host:port, TCP) which etypes and
// salts it holds for principal (for a computer account its sAMAccountName,
// "PC01-AMT$") by sending an AS-REQ without pre-authentication and reading
// the PA-ETYPE-INFO2 of the KDC_ERR_PREAUTH_REQUIRED answer. No secret is
// sent. The context bounds the whole exchange.
func SaltsFromKDC(ctx context.Context, kdcAddr, realm, principal string) ([]KDCSalt, error) {
	fail := func(err error) ([]KDCSalt, error) {
		return nil, fmt.Errorf("krbkey: salts from kdc %s for %s: %w", kdcAddr, principal, err)
	}
	realm = strings.ToUpper(realm)
	cfg := config.New()
	cfg.LibDefaults.DefaultRealm = realm
	cfg.LibDefaults.NoAddresses = true
	cfg.LibDefaults.DefaultTktEnctypeIDs = []int32{AES256, AES128, RC4HMAC}
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{principal}}
	req, err := messages.NewASReqForTGT(realm, cfg, cname)
	if err != nil {
		return fail(err)
	}
	b, err := req.Marshal()
	if err != nil {
		return fail(err)
	}
	reply, err := exchangeTCP(ctx, kdcAddr, b)
	if err != nil {
		return fail(err)
	}
	var krbErr messages.KRBError
	if err := krbErr.Unmarshal(reply); err != nil {
		var rep messages.ASRep
		if rep.Unmarshal(reply) == nil {
			return fail(errors.New("account does not require pre-authentication; no PA-ETYPE-INFO2 offered"))
		}
		return fail(fmt.Errorf("unmarshal reply: %w", err))
	}
	if krbErr.ErrorCode != errorcode.KDC_ERR_PREAUTH_REQUIRED {
		return fail(fmt.Errorf("kdc error %d (%s)", krbErr.ErrorCode, errorcode.Lookup(krbErr.ErrorCode)))
	}
	var pas types.PADataSequence
	if err := pas.Unmarshal(krbErr.EData); err != nil {
		return fail(fmt.Errorf("unmarshal e-data: %w", err))
	}
	var out []KDCSalt
	for _, pa := range pas {
		if pa.PADataType != patype.PA_ETYPE_INFO2 {
			continue
		}
		info, err := pa.GetETypeInfo2()
		if err != nil {
			return fail(fmt.Errorf("unmarshal PA-ETYPE-INFO2: %w", err))
		}
		for _, e := range info {
			out = append(out, KDCSalt{EType: e.EType, Salt: e.Salt, S2KParams: e.S2KParams})
		}
	}
	if len(out) == 0 {
		return fail(errors.New("no PA-ETYPE-INFO2 in the pre-authentication error"))
	}
	return out, nil
}

// exchangeTCP sends one Kerberos message over TCP (RFC 4120 7.2.2: 4-byte
// big-endian length prefix) and returns the reply.
func exchangeTCP(ctx context.Context, addr string, msg []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	frame := make([]byte, 4+len(msg))
	binary.BigEndian.PutUint32(frame, uint32(len(msg)))
	copy(frame[4:], msg)
	if _, err := conn.Write(frame); err != nil {
		return nil, wrapCtx(ctx, err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return nil, wrapCtx(ctx, err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxReply {
		return nil, fmt.Errorf("reply length %d out of range", n)
	}
	reply := make([]byte, n)
	if _, err := io.ReadFull(conn, reply); err != nil {
		return nil, wrapCtx(ctx, err)
	}
	return reply, nil
}

// wrapCtx reports a failure caused by ctx as ctx's error. The socket
// deadline equals ctx's deadline and may fire a moment before ctx does.
func wrapCtx(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if d, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// CAMismatchError means the server did not prove membership of the mesh whose CA the join token pins: either its
// chain holds no CA with the pinned hash (Got is the hash of the CA it did present), or its certificate was not
// signed by that CA. Nothing was sent to that server.
type CAMismatchError struct {
	Want string // the CA hash from the token
	Got  string // the hash of the CA certificate the server presented ("" when it presented none)
	Addr string
	// Forged is set when the server presented the pinned CA certificate with a certificate that CA did not sign.
	Forged bool
}

func (e *CAMismatchError) Error() string {
	if e.Forged {
		return fmt.Sprintf("the node at %s presented the CA this join token pins (sha256 %s) with a certificate "+
			"that CA did not sign: someone is in between; nothing was sent. Check the address and the network path",
			e.Addr, e.Want)
	}
	return fmt.Sprintf("the node at %s is not part of the mesh this join token is for (token pins CA sha256 %s, "+
		"server presented %s): the token belongs to another mesh, or someone is in between; nothing was sent. "+
		"Check the address and the token", e.Addr, e.Want, orNone(e.Got))
}

func orNone(s string) string {
	if s == "" {
		return "no CA"
	}
	return "CA sha256 " + s
}

// CallJoin calls method on the join ALPN of the node at addr without any client identity. During the handshake,
// before any request byte is sent, it checks that the server's chain contains the CA whose CertHash is caHash and
// that the server's certificate verifies against that CA; otherwise it returns a *CAMismatchError.
func CallJoin(ctx context.Context, addr, caHash, method string, req, resp any) error {
	want := strings.ToLower(strings.TrimSpace(caHash))
	if b, err := hex.DecodeString(want); err != nil || len(b) != 32 {
		return fmt.Errorf("join %s: the CA hash %q is not a hex sha256; copy the join token again", addr, caHash)
	}
	var mismatch atomic.Pointer[CAMismatchError]
	tlsConf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPNJoin},
		ServerName:         "shoal",
		InsecureSkipVerify: true, // replaced by the CA pin below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyPinnedCA(cs.PeerCertificates, want); err != nil {
				err.Addr = addr
				mismatch.Store(err)
				return err
			}
			return nil
		},
	}
	conn, err := quic.DialAddr(ctx, addr, tlsConf, quicConfig())
	if err != nil {
		if m := mismatch.Load(); m != nil {
			return m
		}
		return fmt.Errorf("join %s: connect: %w (is a node listening there?)", addr, err)
	}
	defer conn.CloseWithError(codeClosing, "")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("join %s: open stream: %w", addr, err)
	}
	if err := roundTrip(ctx, st, method, req, resp); err != nil {
		var re *RemoteError
		if errors.As(err, &re) {
			return re
		}
		return fmt.Errorf("join %s: %s: %w", addr, method, err)
	}
	return nil
}

// verifyPinnedCA finds the pinned CA in the presented chain and verifies the leaf against it alone.
func verifyPinnedCA(certs []*x509.Certificate, want string) *CAMismatchError {
	if len(certs) == 0 {
		return &CAMismatchError{Want: want}
	}
	var ca *x509.Certificate
	for _, c := range certs[1:] {
		if c.IsCA && CertHash(c.Raw) == want {
			ca = c
			break
		}
	}
	if ca == nil {
		got := ""
		if last := certs[len(certs)-1]; len(certs) > 1 || last.IsCA {
			got = CertHash(last.Raw)
		}
		return &CAMismatchError{Want: want, Got: got}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if err := verifyChain(certs[:1], pool, x509.ExtKeyUsageServerAuth); err != nil {
		// The right CA certificate with a leaf it did not sign: someone replays the public CA certificate.
		return &CAMismatchError{Want: want, Got: want, Forged: true}
	}
	return nil
}

package audit_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
)

// collector accepts connections on l and sends each octet-counted
// message it reads to msgs; stop closes l and the connections.
func collector(t *testing.T, l net.Listener) (msgs <-chan string, stop func()) {
	ch := make(chan string, 100)
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	stop = func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					n, err := br.ReadString(' ')
					if err != nil {
						return
					}
					size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
					if err != nil {
						t.Errorf("frame length %q", n)
						return
					}
					b := make([]byte, size)
					if _, err := io.ReadFull(br, b); err != nil {
						return
					}
					ch <- string(b)
				}
			}()
		}
	}()
	return ch, stop
}

func recv(t *testing.T, msgs <-chan string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message at the collector")
	}
	return ""
}

// TestSyslogNet: records reach a TCP collector as octet-counted RFC 5424
// messages, in order; while it is away they wait in the bounded backlog
// (a write past the bound fails), and they arrive once it is back.
func TestSyslogNet(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	msgs, stop := collector(t, l)
	s, err := audit.DialSyslogNet(audit.SyslogNetOptions{Address: addr, Backlog: 3000,
		SyslogOptions: audit.SyslogOptions{Hostname: "h", Facility: audit.FacilityLocal0}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := func(i int) []byte {
		return []byte(`{"@timestamp":"x","event":{"action":"exec.exit"},"n":` + strconv.Itoa(i) + "}\n")
	}
	for i := range 3 {
		if err := s.Write(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		m := recv(t, msgs)
		if !strings.HasPrefix(m, "<134>1 ") || !strings.HasSuffix(m, `"n":`+strconv.Itoa(i)+"}") || strings.Contains(m, "\n") {
			t.Errorf("message %d: %q", i, m)
		}
	}

	// The collector goes away.
	stop()
	time.Sleep(100 * time.Millisecond)
	var queued int
	for i := 3; ; i++ {
		if err := s.Write(rec(i)); err != nil {
			if !strings.Contains(err.Error(), "backlog is full") {
				t.Fatalf("write past the backlog: %v", err)
			}
			break
		}
		queued++
		if queued > 100 {
			t.Fatal("the backlog is not bounded")
		}
	}
	if queued < 5 {
		t.Fatalf("only %d records queued in a 3000-byte backlog", queued)
	}
	// It comes back at the same address: the queued records arrive, in
	// order, before any new one.
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	msgs, stop = collector(t, l2)
	defer stop()
	for i := 3; i < 3+queued; i++ {
		if m := recv(t, msgs); !strings.HasSuffix(m, `"n":`+strconv.Itoa(i)+"}") {
			t.Fatalf("after the collector came back: %q, want record %d", m, i)
		}
	}
	if err := s.Sync(); err != nil {
		t.Error(err)
	}
}

// TestSyslogNetTLS: over TLS, records reach a collector whose certificate
// the sink trusts; a collector it does not trust gets nothing.
func TestSyslogNetTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "collector"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, stop := collector(t, l)
	defer stop()
	trusted := x509.NewCertPool()
	trusted.AddCert(cert)
	for _, tt := range []struct {
		name  string
		roots *x509.CertPool
		ok    bool
	}{{"trusted", trusted, true}, {"untrusted", x509.NewCertPool(), false}} {
		s, err := audit.DialSyslogNet(audit.SyslogNetOptions{Address: l.Addr().String(), TLS: &tls.Config{RootCAs: tt.roots}})
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte(`{"@timestamp":"x","tls":"` + tt.name + `"}` + "\n"))
		select {
		case m := <-msgs:
			if !tt.ok || !strings.HasSuffix(m, `"tls":"`+tt.name+`"}`) {
				t.Errorf("%s: the collector got %q", tt.name, m)
			}
		case <-time.After(2 * time.Second):
			if tt.ok {
				t.Errorf("%s: nothing arrived", tt.name)
			}
		}
		s.Close()
	}
}

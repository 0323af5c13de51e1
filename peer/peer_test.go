package peer

import (
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
)

func TestFromConn(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := FromConn(s)
	if err != nil {
		t.Fatal(err)
	}
	want := Peer{PID: os.Getpid(), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if p != want {
		t.Errorf("FromConn = %+v, want %+v", p, want)
	}
}

func TestDescribe(t *testing.T) {
	n := NewNames()
	tests := []struct {
		name string
		in   Peer
		want func(Peer) bool
	}{
		{"this process", Peer{PID: os.Getpid(), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}, func(p Peer) bool {
			u, _ := user.LookupId(strconv.Itoa(os.Getuid()))
			exe, _ := os.Executable()
			return u != nil && p.User == u.Username && p.Group != "" && p.Exe == exe
		}},
		{"unknown ids and no pid", Peer{UID: 4000000000, GID: 4000000000}, func(p Peer) bool {
			return p.User == "" && p.Group == "" && p.Exe == ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.in
			n.Describe(&p)
			if !tt.want(p) {
				t.Errorf("Describe(%+v) = %+v", tt.in, p)
			}
		})
	}
}

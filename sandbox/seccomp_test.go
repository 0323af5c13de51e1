package sandbox

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// replier returns a loopback TCP port whose connections get "pong" after
// their first read.
func replier(t *testing.T) int {
	t.Helper()
	_, port := listenServing(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 64))
		c.Write([]byte("pong\n"))
		c.Close()
	})
	return port
}

// udpSink returns a loopback UDP port and a channel of what it receives.
func udpSink(t *testing.T) (int, <-chan string) {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port, got
}

// The ways around Landlock's TCP rules, tried from inside a child whose
// decision allows no TCP port at all. Each probe fails with the network
// filter; TestNetworkFilterControls shows each succeeding without it.
func TestNetworkFilter(t *testing.T) {
	needRoot(t)
	needABI(t, 4)
	closed := &Landlock{RO: []string{binDir}, ConnectTCP: []uint16{}, BindTCP: []uint16{}}
	withUDP := &Landlock{RO: []string{binDir}, ConnectTCP: []uint16{}, BindTCP: []uint16{}, UDP: true}
	denied := replier(t)
	udpPort, udpGot := udpSink(t)
	bindPort := freePort(t)
	tests := []struct {
		name string
		ll   *Landlock
		args []string
		want string
	}{
		{"plain connect", closed, []string{"dial", fmt.Sprint("127.0.0.1:", denied)}, "error: dial tcp 127.0.0.1:" + fmt.Sprint(denied) + ": connect: permission denied"},
		{"TCP Fast Open sendto", closed, []string{"tfo", fmt.Sprint(denied)}, "error: sendto: operation not permitted"},
		{"io_uring socket then connect", closed, []string{"uring-connect", fmt.Sprint(denied)}, "error: io_uring_setup: operation not permitted"},
		{"io_uring socket then bind", closed, []string{"uring-bind", fmt.Sprint(bindPort)}, "error: io_uring_setup: operation not permitted"},
		{"MPTCP socket", closed, []string{"mptcp-dial", fmt.Sprint(denied)}, "error: socket: protocol not supported"},
		{"UDP sendto", closed, []string{"udp", fmt.Sprint(udpPort)}, "error: socket: operation not permitted"},
		{"UDP sendto, UDP allowed", withUDP, []string{"udp", fmt.Sprint(udpPort)}, "ok"},
	}
	// Once with the network filter alone, once merged with the default
	// profile into one filter; the other sockets still work in both.
	tests = append(tests, []struct {
		name string
		ll   *Landlock
		args []string
		want string
	}{
		{"UNIX and netlink sockets", closed, []string{"interfaces"}, "ok lo:up"},
	}...)
	for _, sc := range []*Seccomp{nil, {Profile: SeccompDefault}} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s, profile %v", tt.name, sc != nil), func(t *testing.T) {
				r := run(t, &Spec{Path: testprog, Args: append([]string{"testprog"}, tt.args...), Credential: nobody, Landlock: tt.ll, Seccomp: sc})
				if !strings.HasPrefix(r.stdout, tt.want) {
					t.Errorf("got %q (stderr %q), want %q", r.stdout, r.stderr, tt.want)
				}
			})
		}
		select {
		case d := <-udpGot:
			if d != "hello" {
				t.Errorf("UDP sink got %q", d)
			}
		case <-time.After(5 * time.Second):
			t.Error("the allowed UDP datagram never arrived")
		}
	}
	select {
	case d := <-udpGot:
		t.Errorf("a refused UDP datagram arrived: %q", d)
	default:
	}
}

// The controls of TestNetworkFilter: the same probes, same Landlock rules,
// without the network filter, get through on this kernel.
func TestNetworkFilterControls(t *testing.T) {
	// Not parallel: it switches the filter off.
	needRoot(t)
	needABI(t, 4)
	sp := newTestSpawner(t, Options{Cgroups: CgroupOptions{Disabled: true}})
	sp.noNetworkFilter = true
	prev := testSpawner
	testSpawner = sp
	defer func() { testSpawner = prev }()
	closed := &Landlock{RO: []string{binDir}, ConnectTCP: []uint16{}, BindTCP: []uint16{}}
	denied := replier(t)
	udpPort, udpGot := udpSink(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"plain connect is still refused by Landlock", []string{"dial", fmt.Sprint("127.0.0.1:", denied)}, "error: dial tcp"},
		{"TCP Fast Open sendto gets the reply", []string{"tfo", fmt.Sprint(denied)}, "ok pong"},
		{"io_uring MPTCP socket connects", []string{"uring-connect", fmt.Sprint(denied)}, "ok"},
		{"io_uring MPTCP socket binds and listens", []string{"uring-bind", fmt.Sprint(freePort(t))}, "ok"},
		{"UDP sendto", []string{"udp", fmt.Sprint(udpPort)}, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, &Spec{Path: testprog, Args: append([]string{"testprog"}, tt.args...), Credential: nobody, Landlock: closed})
			if !strings.HasPrefix(r.stdout, tt.want) {
				t.Errorf("got %q (stderr %q), want %q", r.stdout, r.stderr, tt.want)
			}
		})
	}
	select {
	case <-udpGot:
	case <-time.After(5 * time.Second):
		t.Error("no UDP datagram arrived")
	}
}

// The default profile, tried from inside: user namespaces (by clone and by
// unshare), io_uring and the keyring are refused; the same probes without
// a profile succeed.
func TestSeccompProfile(t *testing.T) {
	t.Parallel()
	needRoot(t)
	def := &Seccomp{Profile: SeccompDefault}
	tests := []struct {
		name string
		sc   *Seccomp
		path string
		args []string
		want string
	}{
		{"clone CLONE_NEWUSER", def, testprog, []string{"testprog", "clone-newuser"}, "error: fork/exec /bin/true: operation not permitted"},
		{"clone CLONE_NEWUSER, no profile", nil, testprog, []string{"testprog", "clone-newuser"}, "ok"},
		{"unshare --user", def, "/usr/bin/unshare", []string{"unshare", "--user", "/bin/echo", "ok"}, ""},
		{"unshare --user, no profile", nil, "/usr/bin/unshare", []string{"unshare", "--user", "/bin/echo", "ok"}, "ok"},
		{"io_uring", def, testprog, []string{"testprog", "uring-connect", "1"}, "error: io_uring_setup: operation not permitted"},
		{"io_uring, no profile", nil, testprog, []string{"testprog", "uring-connect", "1"}, "error: connection refused"},
		{"io_uring allowed", &Seccomp{Profile: SeccompDefault, Allow: []string{"io_uring_setup", "io_uring_enter"}}, testprog, []string{"testprog", "uring-connect", "1"}, "error: connection refused"},
		{"UDP denied by name", &Seccomp{Profile: SeccompNone, Deny: []string{"sendto"}}, testprog, []string{"testprog", "udp", "9"}, "error: operation not permitted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, &Spec{Path: tt.path, Args: tt.args, Credential: nobody, Seccomp: tt.sc})
			if tt.want == "" {
				if r.state.ExitCode == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
					t.Errorf("exit %d, stdout %q, stderr %q: want a refusal", r.state.ExitCode, r.stdout, r.stderr)
				}
				return
			}
			if !strings.HasPrefix(r.stdout, tt.want) {
				t.Errorf("got %q (stderr %q), want %q", r.stdout, r.stderr, tt.want)
			}
		})
	}
}

func TestSeccompSpecErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		sc   *Seccomp
		tcp  bool
		want string
	}{
		{&Seccomp{Profile: "strict"}, false, `seccomp profile "strict" is not "default" or "none"`},
		{&Seccomp{Profile: SeccompNone, Allow: []string{"chmod"}}, false, `seccomp allow needs a profile`},
		{&Seccomp{Profile: SeccompDefault, Deny: []string{"nope"}}, false, `seccomp: unknown system call nope`},
		{&Seccomp{Profile: SeccompDefault, Allow: []string{"io_uring_setup"}}, true, `seccomp allows io_uring_setup, which would bypass the TCP rules`},
		{&Seccomp{Profile: SeccompDefault, Allow: []string{"io_uring_setup"}}, false, ``},
	}
	for _, tt := range tests {
		err := CheckSeccomp(tt.sc, tt.tcp)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v: err %v, want %q", tt.sc, err, tt.want)
		}
	}
}

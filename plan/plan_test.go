package plan

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/sockwarden/sockwarden/policy"
	"github.com/sockwarden/sockwarden/sandbox"
)

// host is a root server on a kernel with Landlock ABI 7 and request
// cgroups with only the pids controller; paths under /missing do not
// exist.
func host(abi int, controllers ...string) Host {
	return Host{
		UID: 0, GID: 0,
		Caps: sandbox.Capabilities{
			SetID:       true,
			Namespaces:  true,
			DynamicUIDs: sandbox.DefaultUIDRange,
			TmpDir:      sandbox.DefaultTmpDir,
			LandlockABI: abi,
			Cgroups:     sandbox.CgroupReport{Available: true, Parent: "/sys/fs/cgroup/test", Controllers: controllers},
		},
		Existing: func(paths []string) []string {
			return slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return strings.HasPrefix(p, "/missing") })
		},
	}
}

// planCase is a row of TestPlan.
type planCase struct {
	name string
	host Host
	def  Defaults
	d    *policy.Decision
	req  *Request
	// want: "run", "deny" (decision-stage deny, 126) or "start"
	// (allowed, cannot start, with status).
	want       string
	status     int
	errPart    string
	errAs      any
	checkAllow func(*testing.T, *Plan)
}

func TestPlan(t *testing.T) {
	nobody := &policy.RunAs{User: "nobody"}
	allow := func(f func(*policy.Decision)) *policy.Decision {
		d := &policy.Decision{Allow: true, RunAs: nobody}
		if f != nil {
			f(d)
		}
		return d
	}
	uname := &Request{ID: "r1", Argv: []string{"uname", "-a"}, Exe: "/usr/bin/uname"}
	tests := []planCase{
		{name: "allowed", host: host(7, "pids"), d: allow(nil), req: uname, want: "run",
			checkAllow: func(t *testing.T, p *Plan) {
				if p.Spec.Path != "/usr/bin/uname" || !slices.Equal(p.Spec.Args, uname.Argv) || p.Spec.Credential == nil || p.Spec.Credential.UID == 0 {
					t.Errorf("spec %+v", p.Spec)
				}
			}},
		{name: "denied by the policy", host: host(7), d: &policy.Decision{Message: "no"}, req: uname, want: "deny", status: 126},
		{name: "root refused (inherited from a root server)", host: host(7), d: &policy.Decision{Allow: true}, req: uname,
			want: "deny", status: 126, errPart: "run the program as root"},
		{name: "root refused (explicit)", host: host(7), d: allow(func(d *policy.Decision) { d.RunAs = &policy.RunAs{User: "0"} }), req: uname,
			want: "deny", status: 126, errPart: "run the program as root"},
		{name: "root allowed by the configuration", host: host(7), def: Defaults{AllowRoot: true}, d: &policy.Decision{Allow: true}, req: uname, want: "run"},
		{name: "unknown user", host: host(7), d: allow(func(d *policy.Decision) { d.RunAs = &policy.RunAs{User: "no-such-user-sw"} }), req: uname,
			want: "deny", status: 126, errPart: `run_as user "no-such-user-sw"`},
		{name: "unknown group", host: host(7), d: allow(func(d *policy.Decision) { d.RunAs = &policy.RunAs{User: "nobody", Group: "no-such-group-sw"} }), req: uname,
			want: "deny", status: 126, errPart: `run_as group "no-such-group-sw"`},
		{name: "unknown supplementary group", host: host(7), d: allow(func(d *policy.Decision) {
			d.RunAs = &policy.RunAs{User: "nobody", Groups: []string{"no-such-group-sw"}}
		}), req: uname,
			want: "deny", status: 126, errPart: `run_as group "no-such-group-sw"`},
		{name: "unknown rlimit", host: host(7), def: Defaults{Rlimits: map[string]uint64{"cpux": 5}}, d: allow(nil), req: uname,
			want: "deny", status: 126, errPart: `rlimit "cpux"`},
		{name: "Landlock ABI too old for TCP rules", host: host(3), d: allow(func(d *policy.Decision) {
			d.Landlock = &policy.Landlock{RO: []string{"/usr"}, ConnectTCP: []int{443}}
		}), req: uname, want: "start", status: 126, errAs: new(*sandbox.UnsupportedError), errPart: "tcp (needs ABI 4)"},
		{name: "no Landlock at all", host: host(0), d: allow(func(d *policy.Decision) { d.Landlock = &policy.Landlock{RO: []string{"/usr"}} }), req: uname,
			want: "start", status: 126, errAs: new(*sandbox.UnsupportedError), errPart: "landlock (not supported by the kernel)"},
		{name: "Landlock best effort runs with less", host: host(3), def: Defaults{LandlockBestEffort: true}, d: allow(func(d *policy.Decision) {
			d.Landlock = &policy.Landlock{RO: []string{"/usr"}, ConnectTCP: []int{443}}
		}), req: uname, want: "run"},
		{name: "absent cgroup controller", host: host(7, "pids"), d: allow(func(d *policy.Decision) { d.Cgroup = &policy.Cgroup{MemoryMax: 1 << 28} }), req: uname,
			want: "start", status: 126, errAs: new(*sandbox.CgroupUnsupportedError), errPart: "memory.max"},
		{name: "present cgroup controller", host: host(7, "pids"), d: allow(func(d *policy.Decision) { d.Cgroup = &policy.Cgroup{PidsMax: 8} }), req: uname, want: "run"},
		{name: "relative argv[0]", host: host(7), d: allow(nil), req: &Request{Argv: []string{"./x"}, ExeErr: errRelativePath},
			want: "start", status: 127, errPart: "relative program paths are not allowed"},
		{name: "not found", host: host(7), d: allow(nil), req: &Request{Argv: []string{"nope"}, ExeErr: errCommandNotFound},
			want: "start", status: 127, errPart: "command not found"},
		{name: "missing Landlock paths are dropped and listed", host: host(7), d: allow(func(d *policy.Decision) {
			d.Landlock = &policy.Landlock{RO: []string{"/usr", "/missing/lib64"}, RW: []string{"/missing/tmp"}}
		}), req: uname, want: "run", checkAllow: func(t *testing.T, p *Plan) {
			if !slices.Equal(p.Spec.Landlock.RO, []string{"/usr"}) || len(p.Spec.Landlock.RW) != 0 ||
				!slices.Equal(p.DroppedPaths, []string{"/missing/lib64", "/missing/tmp"}) || !p.Spec.Landlock.UnrestrictedTCP {
				t.Errorf("landlock %+v, dropped %v", p.Spec.Landlock, p.DroppedPaths)
			}
		}},
		{name: "the default seccomp profile without the key", host: host(7), d: allow(nil), req: uname, want: "run",
			checkAllow: func(t *testing.T, p *Plan) {
				if !p.Spec.PrivateIPC || p.Spec.NoNetwork {
					t.Errorf("want a private IPC namespace and the host's network by default: %+v", p.Spec)
				}
				if sc := p.Spec.Seccomp; sc == nil || sc.Profile != sandbox.SeccompDefault || !p.Spec.NoNewPrivs {
					t.Errorf("seccomp %+v nnp %v, want the default profile with no_new_privs", sc, p.Spec.NoNewPrivs)
				}
			}},
		{name: "run_as dynamic", host: host(7), def: Defaults{User: "nobody"}, d: allow(func(d *policy.Decision) { d.RunAs = &policy.RunAs{Dynamic: true} }), req: uname, want: "run",
			checkAllow: func(t *testing.T, p *Plan) {
				if !p.Spec.DynamicUser || p.Spec.Credential != nil {
					t.Errorf("spec %+v, want a dynamic user and no credential", p.Spec)
				}
			}},
		{name: "tmpdir", host: host(7), d: allow(func(d *policy.Decision) { d.TmpDir = true }), req: uname, want: "run",
			checkAllow: func(t *testing.T, p *Plan) {
				if !p.Spec.TmpDir {
					t.Errorf("spec %+v", p.Spec)
				}
			}},
		{name: "network none, ipc host", host: host(7), d: allow(func(d *policy.Decision) { d.Network, d.IPC = "none", "host" }), req: uname, want: "run",
			checkAllow: func(t *testing.T, p *Plan) {
				if p.Spec.PrivateIPC || !p.Spec.NoNetwork {
					t.Errorf("spec %+v", p.Spec)
				}
			}},
		{name: "seccomp profile none", host: host(7), d: allow(func(d *policy.Decision) { d.Seccomp = &policy.Seccomp{Profile: "none"} }), req: uname, want: "run",
			checkAllow: func(t *testing.T, p *Plan) {
				if p.Spec.Seccomp != nil || p.Spec.NoNewPrivs {
					t.Errorf("seccomp %+v nnp %v, want no filter", p.Spec.Seccomp, p.Spec.NoNewPrivs)
				}
			}},
		{name: "seccomp deny on profile none", host: host(7), d: allow(func(d *policy.Decision) {
			d.Seccomp = &policy.Seccomp{Profile: "none", Deny: []string{"ptrace"}}
		}), req: uname, want: "run", checkAllow: func(t *testing.T, p *Plan) {
			if sc := p.Spec.Seccomp; sc == nil || sc.Profile != sandbox.SeccompNone || !slices.Equal(sc.Deny, []string{"ptrace"}) {
				t.Errorf("seccomp %+v", sc)
			}
		}},
		{name: "seccomp unknown system call", host: host(7), d: allow(func(d *policy.Decision) { d.Seccomp = &policy.Seccomp{Deny: []string{"ptracee"}} }), req: uname,
			want: "deny", status: 126, errPart: "unknown system call ptracee"},
		{name: "seccomp allow that bypasses the TCP rules", host: host(7), d: allow(func(d *policy.Decision) {
			d.Landlock = &policy.Landlock{RO: []string{"/usr"}, ConnectTCP: []int{}}
			d.Seccomp = &policy.Seccomp{Allow: []string{"io_uring_setup"}}
		}), req: uname, want: "deny", status: 126, errPart: "would bypass the TCP rules"},
		{name: "udp without TCP rules", host: host(7), d: allow(func(d *policy.Decision) {
			d.Landlock = &policy.Landlock{RO: []string{"/usr"}, UDP: true}
		}), req: uname, want: "deny", status: 126, errPart: "landlock.udp without connect_tcp or bind_tcp"},
		{name: "udp with TCP rules", host: host(7), d: allow(func(d *policy.Decision) {
			d.Landlock = &policy.Landlock{RO: []string{"/usr"}, ConnectTCP: []int{53}, UDP: true}
		}), req: uname, want: "run", checkAllow: func(t *testing.T, p *Plan) {
			if !p.Spec.Landlock.UDP {
				t.Error("UDP not passed on")
			}
		}},
	}
	// A server running as uid 33 without the privilege to switch users.
	www := host(7)
	www.UID, www.GID, www.Groups, www.Caps.SetID, www.Caps.Namespaces, www.Caps.DynamicUIDs = 33, 33, []uint32{33}, false, false, sandbox.UIDRange{}
	www.Caps.TmpDir, www.Caps.TmpDirReason = "", "cannot"
	tests = append(tests, []planCase{
		{name: "no privilege to switch users", host: www, d: allow(nil), req: uname,
			want: "deny", status: 126, errPart: "without the privilege to switch users"},
		{name: "no privilege needed for the server's own identity", host: www,
			d: allow(func(d *policy.Decision) { d.RunAs = &policy.RunAs{User: "33", Group: "33"} }), req: uname, want: "run",
			checkAllow: func(t *testing.T, p *Plan) {
				if p.Spec.Credential != nil {
					t.Errorf("credential %+v, want none (the server's own)", p.Spec.Credential)
				}
			}},
		{name: "no privilege to drop supplementary groups", host: www,
			d: allow(func(d *policy.Decision) { d.RunAs = &policy.RunAs{User: "33", Group: "33", Groups: []string{}} }), req: uname,
			want: "deny", status: 126, errPart: "without the privilege to switch users"},
		{name: "the default needs no privilege", host: www, d: &policy.Decision{Allow: true}, req: uname, want: "run",
			checkAllow: func(t *testing.T, p *Plan) {
				if p.Spec.PrivateIPC || p.Spec.NoNetwork {
					t.Errorf("namespaces asked of a server that cannot make them: %+v", p.Spec)
				}
			}},
		{name: "run_as dynamic needs dynamic uids", host: www, d: &policy.Decision{Allow: true, RunAs: &policy.RunAs{Dynamic: true}}, req: uname,
			want: "deny", status: 126, errPart: "run_as dynamic: this server has no dynamic uids"},
		{name: "tmpdir needs a parent", host: www, d: &policy.Decision{Allow: true, TmpDir: true}, req: uname,
			want: "deny", status: 126, errPart: "tmpdir: this server has no private temporary directories (cannot)"},
		{name: "network none needs the privilege", host: www, d: &policy.Decision{Allow: true, Network: "none"}, req: uname,
			want: "deny", status: 126, errPart: `network "none" needs CAP_SYS_ADMIN`},
		{name: "ipc private needs the privilege", host: www, d: &policy.Decision{Allow: true, IPC: "private"}, req: uname,
			want: "deny", status: 126, errPart: `ipc "private" needs CAP_SYS_ADMIN`},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPlanner(tt.host).Plan(tt.d, &tt.def, tt.req)
			var err error
			switch tt.want {
			case "run":
				if !p.Allow || p.StartErr != nil || p.Status != 0 {
					t.Fatalf("plan allow=%v start=%v status=%d err=%v, want it to run", p.Allow, p.StartErr, p.Status, p.Err)
				}
				if tt.checkAllow != nil {
					tt.checkAllow(t, p)
				}
				return
			case "deny":
				if p.Allow {
					t.Fatalf("plan allows; want a deny")
				}
				err = p.Err
				if line := p.ClientLine("r1"); !strings.HasPrefix(line, "sockwarden: denied: ") || !strings.HasSuffix(line, "(request r1)\n") {
					t.Errorf("client line %q", line)
				}
			case "start":
				if !p.Allow || p.StartErr == nil {
					t.Fatalf("plan allow=%v start=%v, want allowed but not startable", p.Allow, p.StartErr)
				}
				err = p.StartErr
				if line := p.ClientLine("r1"); !strings.HasPrefix(line, "sockwarden: ") || !strings.Contains(line, err.Error()) {
					t.Errorf("client line %q", line)
				}
			}
			if p.Status != tt.status {
				t.Errorf("status %d, want %d", p.Status, tt.status)
			}
			if tt.errPart != "" && (err == nil || !strings.Contains(err.Error(), tt.errPart)) {
				t.Errorf("error %v, want it to say %q", err, tt.errPart)
			}
			if tt.errAs != nil && !errors.As(err, tt.errAs) {
				t.Errorf("error %T %v, want %T", err, err, tt.errAs)
			}
		})
	}
}

func TestResolveExe(t *testing.T) {
	dir := t.TempDir()
	exe := dir + "/prog"
	mustWrite(t, exe, 0o755)
	mustWrite(t, dir+"/data", 0o644)
	path := "relative/dir:" + dir + ":/usr/bin"
	tests := []struct {
		name, want string
		wantErr    error
	}{
		{"prog", exe, nil},
		{"cat", "/usr/bin/cat", nil},
		{"data", "", errCommandNotFound}, // not executable: skipped
		{"nope", "", errCommandNotFound},
		{"", "", errCommandNotFound},
		{"prog\x00", "", errCommandNotFound},
		{"/usr/bin/../bin/cat", "/usr/bin/../bin/cat", nil}, // kept as judged
		{"/no/such/file", "/no/such/file", nil},             // the spawn reports it
		{"./prog", "", errRelativePath},
		{"../prog", "", errRelativePath},
		{"a/b", "", errRelativePath},
	}
	for _, tt := range tests {
		got, err := ResolveExe(tt.name, path)
		if got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("ResolveExe(%q) = %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

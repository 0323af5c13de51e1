package seccomp

import (
	"errors"
	"strings"
	"testing"
)

func TestCompile(t *testing.T) {
	tests := []struct {
		name        string
		build       func() (Program, error)
		empty       bool
		errContains string
	}{
		{"default", func() (Program, error) { return CompileProfile(Default, nil, nil) }, false, ""},
		{"default with allow and deny", func() (Program, error) {
			return CompileProfile(Default, []string{"io_uring_setup", "personality"}, []string{"chmod", "clone"})
		}, false, ""},
		{"none", func() (Program, error) { return CompileProfile(None, nil, nil) }, true, ""},
		{"none with deny", func() (Program, error) { return CompileProfile(None, nil, []string{"chmod"}) }, false, ""},
		{"none with allow", func() (Program, error) { return CompileProfile(None, []string{"chmod"}, nil) }, true, "allow needs a profile"},
		{"unknown profile", func() (Program, error) { return CompileProfile("strict", nil, nil) }, true, `unknown profile "strict"`},
		{"unknown call", func() (Program, error) { return CompileProfile(Default, nil, []string{"no_such_call"}) }, true, `unknown system call "no_such_call"`},
		{"network", func() (Program, error) { return CompileNetwork(false) }, false, ""},
		{"network with udp", func() (Program, error) { return CompileNetwork(true) }, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.build()
			if tt.errContains != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errContains) {
					t.Fatalf("err %v, want %q", err, tt.errContains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (len(p) == 0) != tt.empty {
				t.Fatalf("%d instructions, want empty=%v", len(p), tt.empty)
			}
			t.Logf("%d instructions", len(p))
		})
	}
}

func TestCheck(t *testing.T) {
	if err := Check([]string{"chmod", "io_uring_setup"}); err != nil {
		t.Error(err)
	}
	if err := Check([]string{"chmod", "nope", "neither"}); err == nil || err.Error() != "unknown system call nope, neither" {
		t.Errorf("err %v", err)
	}
	if got := Bypasses([]string{"chmod", "io_uring_enter"}); len(got) != 1 || got[0] != "io_uring_enter" {
		t.Errorf("Bypasses: %v", got)
	}
}

// BenchmarkCompile is the cost of compiling a filter, which the spawner
// does once per distinct rule set.
func BenchmarkCompile(b *testing.B) {
	b.Run("default", func(b *testing.B) {
		for b.Loop() {
			if _, err := CompileProfile(Default, nil, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("network", func(b *testing.B) {
		for b.Loop() {
			if _, err := CompileNetwork(false); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestMergedDomains(t *testing.T) {
	p, err := CompileDefaultWithNetwork(nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("merged: %d instructions", len(p))
	if _, err := CompileDefaultWithNetwork(nil, []string{"sendto"}, false); !errors.Is(err, ErrNotMergeable) {
		t.Errorf("deny sendto: %v, want ErrNotMergeable", err)
	}
	if _, err := CompileDefaultWithNetwork([]string{"io_uring_setup"}, nil, false); err == nil {
		t.Error("allowing io_uring under restricted TCP compiled")
	}
}

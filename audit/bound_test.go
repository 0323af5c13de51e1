package audit_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/audit/audittest"
)

func TestArgvSHA256(t *testing.T) {
	want := sha256.Sum256([]byte("5:uname,2:-a,"))
	if got := audit.ArgvSHA256([]string{"uname", "-a"}); got != hex.EncodeToString(want[:]) {
		t.Errorf("got %s", got)
	}
	// Arguments that read the same once written (invalid UTF-8 becomes
	// U+FFFD) or concatenate the same hash apart.
	pairs := [][2][]string{
		{{"a\xff"}, {"a\xfe"}},
		{{"ab", "c"}, {"a", "bc"}},
	}
	for _, p := range pairs {
		if audit.ArgvSHA256(p[0]) == audit.ArgvSHA256(p[1]) {
			t.Errorf("%q and %q hash the same", p[0], p[1])
		}
	}
}

func TestArgvPreview(t *testing.T) {
	for _, tt := range []struct {
		argv []string
		want string
	}{
		{[]string{"uname", "-a"}, "uname -a (2 args)"},
		{[]string{"echo", strings.Repeat("x", 1000)}, "echo " + strings.Repeat("x", 115) + "… (2 args)"},
		{[]string{strings.Repeat("é", 100)}, strings.Repeat("é", 60) + "… (1 args)"},
	} {
		if got := audit.ArgvPreview(tt.argv); got != tt.want {
			t.Errorf("%.40q: got %q, want %q", tt.argv, got, tt.want)
		}
	}
}

// A decision record stays within the bound whatever the caller sent, says
// what it cut, and keeps the hash of the whole argv.
func TestDecisionRecordBounded(t *testing.T) {
	big := strings.Repeat("A", 131000)
	many := make([]string, 4096)
	for i := range many {
		many[i] = strings.Repeat("m", 200)
	}
	tests := []struct {
		name      string
		d         audit.Decision
		cut       bool
		omitted   bool
		fieldsCut []string
	}{
		{"small", audit.Decision{Argv: []string{"uname", "-a"}}, false, false, nil},
		{"7 args of 131000 bytes", audit.Decision{Argv: []string{"echo", big, big, big, big, big, big}}, true, false, nil},
		{"4096 args", audit.Decision{Argv: many}, true, true, nil},
		{"a policy message quoting the argv", audit.Decision{Argv: []string{"echo", big}, Message: "denied: " + big, Reasons: []string{big, big, big}}, true, false, []string{"message", "reasons"}},
		{"multibyte", audit.Decision{Argv: []string{"echo", strings.Repeat("日本", 20000)}}, true, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			l := newLogger(t, sink) // validates every record against the schema
			d := tt.d
			d.RequestID, d.Revision = "r", "rev"
			if err := l.Decision(d); err != nil {
				t.Fatal(err)
			}
			lines := sink.lines()
			rec := lines[len(lines)-1]
			if len(rec)+1 > audit.DefaultMaxRecordBytes {
				t.Errorf("record of %d bytes, over %d", len(rec)+1, audit.DefaultMaxRecordBytes)
			}
			var r struct {
				Process struct {
					Args      []string `json:"args"`
					ArgsCount int      `json:"args_count"`
				} `json:"process"`
				Message    string `json:"message"`
				Sockwarden struct {
					Argv struct {
						SHA256    string `json:"sha256"`
						Cut       []struct{ Index, Length int }
						Omitted   int      `json:"omitted"`
						FieldsCut []string `json:"fields_cut"`
					} `json:"argv"`
				} `json:"sockwarden"`
			}
			if err := json.Unmarshal([]byte(rec), &r); err != nil {
				t.Fatal(err)
			}
			a := r.Sockwarden.Argv
			if r.Process.ArgsCount != len(tt.d.Argv) || a.SHA256 != audit.ArgvSHA256(tt.d.Argv) {
				t.Errorf("args_count %d, sha256 %s: want %d and the whole argv's hash", r.Process.ArgsCount, a.SHA256, len(tt.d.Argv))
			}
			if (len(a.Cut) > 0) != tt.cut || (a.Omitted > 0) != tt.omitted {
				t.Errorf("cut %v omitted %d, want cut=%v omitted=%v", a.Cut, a.Omitted, tt.cut, tt.omitted)
			}
			if strings.Join(a.FieldsCut, ",") != strings.Join(tt.fieldsCut, ",") {
				t.Errorf("fields_cut %v, want %v", a.FieldsCut, tt.fieldsCut)
			}
			// What is shown is a prefix of what was sent, argument by
			// argument, and each cut one is listed with its length.
			if len(r.Process.Args)+a.Omitted != len(tt.d.Argv) {
				t.Errorf("%d shown + %d omitted != %d", len(r.Process.Args), a.Omitted, len(tt.d.Argv))
			}
			cut := map[int]int{}
			for _, c := range a.Cut {
				cut[c.Index] = c.Length
			}
			for i, s := range r.Process.Args {
				full := tt.d.Argv[i]
				if !strings.HasPrefix(full, s) {
					t.Fatalf("arg %d shown %.20q is not a prefix of what was sent", i, s)
				}
				if (len(s) < len(full)) != (cut[i] == len(full)) && len(a.Cut) < 64 {
					t.Errorf("arg %d: shown %d of %d bytes, listed as cut to %d", i, len(s), len(full), cut[i])
				}
			}
		})
	}
}

// TestExitDenialsBounded: an exit record listing many long denials stays
// within the record bound; what does not fit is counted as unlisted.
func TestExitDenialsBounded(t *testing.T) {
	var m memSink
	l := audit.New(&m, audit.Options{Host: "h", MaxRecordBytes: audit.MinMaxRecordBytes})
	e := sampleExit
	d := &audit.SandboxDenials{Received: 32, Total: -1}
	for i := range 32 {
		d.Landlock = append(d.Landlock, audit.Denial{Access: "fs.read_file", Target: "/" + strings.Repeat("x", 250) + strconv.Itoa(i), Count: 1})
	}
	e.Denials = d
	if err := l.Exit(e); err != nil {
		t.Fatal(err)
	}
	line := m.buf.Bytes()
	if len(line) > audit.MinMaxRecordBytes {
		t.Errorf("record of %d bytes, bound %d", len(line), audit.MinMaxRecordBytes)
	}
	audittest.ValidateLines(t, line)
	var rec struct {
		Sockwarden struct {
			Denials struct {
				Landlock []audit.Denial `json:"landlock"`
				Unlisted int            `json:"unlisted"`
			} `json:"denials"`
		} `json:"sockwarden"`
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatal(err)
	}
	got := rec.Sockwarden.Denials
	if len(got.Landlock) == 0 || len(got.Landlock)+got.Unlisted != 32 {
		t.Errorf("listed %d, unlisted %d; want 32 in all, some listed", len(got.Landlock), got.Unlisted)
	}
}

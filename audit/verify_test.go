package audit_test

import (
	"compress/gzip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sockwarden/sockwarden/audit"
)

// twoRuns returns the lines of a log with two server runs: seq 1-7 and
// seq 1-3.
func twoRuns(t testing.TB) []string {
	var m memSink
	now := clock()
	l := newLoggerClock(t, &m, now)
	must(t, l.ServerStart(sampleServerStart))     // 1
	must(t, l.Decision(sampleDecision))           // 2
	must(t, l.Start(sampleStart))                 // 3
	must(t, l.Exit(sampleExit))                   // 4
	must(t, l.Decision(sampleDeny))               // 5
	must(t, l.PolicyReload(sampleReload))         // 6
	must(t, l.ServerStop(sampleServerStop))       // 7
	l = newLoggerClock(t, &m, now)                // restart
	must(t, l.ServerStart(sampleServerStart))     // 8: seq 1
	must(t, l.ProtocolError(sampleProtocolError)) // 9: seq 2
	must(t, l.ServerStop(sampleServerStop))       // 10: seq 3
	return m.lines()
}

// otherLog returns a log written by another logger with other content.
func otherLog(t testing.TB) []string {
	var m memSink
	l := newLogger(t, &m)
	must(t, l.ServerStart(sampleServerStart))
	for range 6 {
		must(t, l.Exit(sampleSignalExit))
	}
	return m.lines()
}

func TestVerify(t *testing.T) {
	base := twoRuns(t)
	other := otherLog(t)
	del := func(ls []string, i ...int) []string { // delete lines (1-based)
		var out []string
		for n, l := range ls {
			if !slices.Contains(i, n+1) {
				out = append(out, l)
			}
		}
		return out
	}
	edit := func(ls []string, line int, old, new string) []string {
		out := slices.Clone(ls)
		if !strings.Contains(out[line-1], old) {
			t.Fatalf("line %d has no %q", line, old)
		}
		out[line-1] = strings.Replace(out[line-1], old, new, 1)
		return out
	}
	swap := func(ls []string, a, b int) []string {
		out := slices.Clone(ls)
		out[a-1], out[b-1] = out[b-1], out[a-1]
		return out
	}
	move := func(ls []string, from, to int) []string { // move line from to after line to
		l := ls[from-1]
		out := del(ls, from)
		return slices.Insert(out, to-1, l)
	}
	tests := []struct {
		name     string
		lines    []string
		raw      string // file content instead of lines
		kind     audit.ProblemKind
		line     int
		detail   string // substring of the problem
		records  int    // when intact
		runs     int
		anchored bool
	}{
		{name: "intact", lines: base, records: 10, runs: 2, anchored: true},
		{name: "starts mid-run", lines: base[3:], records: 7, runs: 2, anchored: false},
		{name: "only the second run", lines: base[7:], records: 3, runs: 1, anchored: true},
		{name: "empty", lines: nil, records: 0, runs: 0},
		{name: "deleted line", lines: del(base, 4), kind: audit.Deleted, line: 4,
			detail: "seq gap 3 -> 5: 1 record deleted"},
		{name: "deleted two lines", lines: del(base, 3, 4), kind: audit.Deleted, line: 3,
			detail: "seq gap 2 -> 5: 2 records deleted"},
		{name: "deleted first line of second run", lines: del(base, 8), kind: audit.Deleted, line: 8,
			detail: "seq 7 -> 2 without a chain start (seq 1): records deleted"},
		{name: "edited exit code", lines: edit(base, 4, `"exit_code":0`, `"exit_code":1`), kind: audit.Altered, line: 4,
			detail: "record seq 4 altered (hash mismatch)"},
		{name: "edited decision", lines: edit(base, 5, `"allow":false`, `"allow":true`), kind: audit.Altered, line: 5},
		{name: "edited seq", lines: edit(base, 4, `"seq":4,`, `"seq":40,`), kind: audit.Altered, line: 4},
		{name: "edited hash", lines: edit(base, 2, `"hash":"`, `"hash":"0`), kind: audit.Malformed, line: 2},
		{name: "edited prev", lines: edit(base, 3, `"prev":"`, `"prev":"1`), kind: audit.Malformed, line: 3},
		{name: "swapped pair", lines: swap(base, 3, 4), kind: audit.Reordered, line: 3,
			detail: "record seq 4 out of order (expected seq 3, found at "},
		{name: "moved later", lines: move(base, 2, 6), kind: audit.Reordered, line: 2},
		{name: "duplicated", lines: slices.Insert(slices.Clone(base), 5, base[4]), kind: audit.Reordered, line: 6,
			detail: "record seq 5 out of order (it belongs after seq 4 at "},
		{name: "replaced by a record of another log", lines: append(append(slices.Clone(base[:4]), other[4]), base[5:]...),
			kind: audit.Deleted, line: 5, detail: "does not link to seq 4"},
		{name: "runs swapped", lines: append(slices.Clone(base[7:]), base[:7]...), kind: audit.Reordered, line: 4,
			detail: "files or runs out of order"},
		{name: "truncated last line", raw: strings.Join(base, "\n") + "\n" + other[1][:100], kind: audit.Truncated, line: 11,
			detail: "truncated record (no newline at end of file)"},
		{name: "cut inside the last record", raw: strings.Join(base[:9], "\n") + "\n" + base[9][:len(base[9])/2],
			kind: audit.Truncated, line: 10},
		{name: "missing final newline only", raw: strings.Join(base, "\n"), kind: audit.Truncated, line: 10},
		{name: "garbage line", lines: slices.Insert(slices.Clone(base), 2, "hello"), kind: audit.Malformed, line: 3},
		{name: "blank line", lines: slices.Insert(slices.Clone(base), 2, ""), kind: audit.Malformed, line: 3},
		{name: "JSON that is no record", lines: slices.Insert(slices.Clone(base), 2, `{"seq":3}`), kind: audit.Malformed, line: 3},
		{name: "CRLF", raw: strings.Join(base, "\r\n") + "\r\n", kind: audit.Malformed, line: 1},
		{name: "first problem wins", lines: del(edit(base, 2, `"-a"`, `"-b"`), 5), kind: audit.Altered, line: 2},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".log")
			content := tt.raw
			if content == "" && tt.lines != nil {
				content = strings.Join(tt.lines, "\n") + "\n"
			}
			must(t, os.WriteFile(p, []byte(content), 0o600))
			rep, err := audit.VerifyFiles(p)
			if err != nil {
				t.Fatal(err)
			}
			if tt.kind == 0 {
				if rep.Problem != nil {
					t.Fatalf("problem in an intact log: %s", rep.Problem)
				}
				if rep.Records != tt.records || rep.Runs != tt.runs || rep.Anchored != tt.anchored || rep.Files != 1 {
					t.Errorf("report %+v", rep)
				}
				return
			}
			pr := rep.Problem
			if pr == nil {
				t.Fatalf("case %d: no problem found", i)
			}
			if pr.Kind != tt.kind || pr.Line != tt.line || pr.File != p || !strings.Contains(pr.Detail, tt.detail) {
				t.Errorf("got %v %q, want %v at line %d containing %q", pr.Kind, pr.String(), tt.kind, tt.line, tt.detail)
			}
			if !strings.HasPrefix(pr.String(), p+":"+strconv.Itoa(tt.line)+": ") {
				t.Errorf("String() = %q", pr.String())
			}
			if rep.Records != tt.line-1 && tt.kind != audit.Deleted && tt.kind != audit.Reordered {
				t.Errorf("Records = %d, want %d (the lines before the problem)", rep.Records, tt.line-1)
			}
		})
	}
}

// TestVerifyAcrossFiles: deletion at a file boundary and gzip'd
// rotated files.
func TestVerifyAcrossFiles(t *testing.T) {
	base := twoRuns(t)
	dir := t.TempDir()
	a := writeLog(t, dir, "audit.log.1", base[:4])
	b := writeLog(t, dir, "audit.log", base[4:])
	rep := verifyOK(t, a, b)
	if rep.Files != 2 || rep.Records != 10 {
		t.Errorf("report %+v", rep)
	}

	// The rotated file compressed by logrotate.
	gz := filepath.Join(dir, "audit.log.1.gz")
	f, err := os.Create(gz)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	zw.Write([]byte(strings.Join(base[:4], "\n") + "\n"))
	must(t, zw.Close())
	must(t, f.Close())
	verifyOK(t, gz, b)

	// The last record of the old file is gone: caught at the first line
	// of the new one.
	a2 := writeLog(t, dir, "cut.log.1", base[:3])
	rep, err = audit.VerifyFiles(a2, b)
	if err != nil || rep.Problem == nil || rep.Problem.File != b || rep.Problem.Line != 1 || rep.Problem.Kind != audit.Deleted {
		t.Fatalf("%+v %v", rep.Problem, err)
	}
	// A missing file is an I/O error, not a verdict.
	if _, err := audit.VerifyFiles(filepath.Join(dir, "nope")); err == nil {
		t.Error("no error for a missing file")
	}
}

// TestVerifierStreaming feeds a Verifier readers directly.
func TestVerifierStreaming(t *testing.T) {
	base := twoRuns(t)
	var v audit.Verifier
	must(t, v.Add("part1", strings.NewReader(strings.Join(base[:5], "\n")+"\n")))
	must(t, v.Add("part2", strings.NewReader(strings.Join(base[5:], "\n")+"\n")))
	rep := v.Report()
	if !rep.OK() || rep.Records != 10 || rep.LastSeq != 3 {
		t.Fatalf("%+v", rep)
	}
}

package audit_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sockwarden/sockwarden/audit"
)

// failSink fails every write when failing.
type failSink struct {
	memSink
	failing bool
}

func (f *failSink) Write(b []byte) error {
	if f.failing {
		return errors.New("collector away")
	}
	return f.memSink.Write(b)
}

// TestTeeSink: every member gets every record; a best-effort member's
// failure is reported to OnError and does not fail the write (the Logger
// stays healthy), a required member's does.
func TestTeeSink(t *testing.T) {
	var truth memSink
	copySink := &failSink{failing: true}
	var reported []string
	tee := audit.NewTeeSink(
		audit.TeeMember{Name: "file", Sink: &truth, Required: true},
		audit.TeeMember{Name: "syslog", Sink: copySink},
	)
	tee.OnError = func(name string, err error) { reported = append(reported, name+": "+err.Error()) }
	l := newLogger(t, tee)
	if err := l.Exit(sampleExit); err != nil {
		t.Fatalf("a best-effort member failed the write: %v", err)
	}
	if l.Healthy() != nil || truth.buf.Len() == 0 || len(reported) != 1 || reported[0] != "syslog: collector away" {
		t.Errorf("healthy %v, truth %d bytes, reported %q", l.Healthy(), truth.buf.Len(), reported)
	}
	copySink.failing = false
	if err := l.Exit(sampleExit); err != nil || copySink.buf.Len() == 0 {
		t.Errorf("the copy after recovery: %v, %d bytes", err, copySink.buf.Len())
	}

	required := &failSink{failing: true}
	l = newLogger(t, audit.NewTeeSink(audit.TeeMember{Name: "file", Sink: &memSink{}, Required: true},
		audit.TeeMember{Name: "syslog", Sink: required, Required: true}))
	if err := l.Exit(sampleExit); err == nil || !strings.Contains(err.Error(), "syslog: collector away") {
		t.Errorf("a required member's failure: %v", err)
	}
}

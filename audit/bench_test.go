package audit_test

import (
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
)

// BenchmarkLog measures one record, end to end (encode, hash, write),
// per event kind and sink.
func BenchmarkLog(b *testing.B) {
	events := []struct {
		name string
		log  func(l *audit.Logger) error
	}{
		{"decision", func(l *audit.Logger) error { return l.Decision(sampleDecision) }},
		{"exit", func(l *audit.Logger) error { return l.Exit(sampleExit) }},
	}
	sinks := []struct {
		name string
		open func(b *testing.B) audit.Sink
	}{
		{"discard", func(b *testing.B) audit.Sink { return audit.NewWriterSink(io.Discard) }},
		{"file", func(b *testing.B) audit.Sink { return openBenchFile(b, audit.SyncNone) }},
		{"file-fsync", func(b *testing.B) audit.Sink { return openBenchFile(b, audit.SyncEvery) }},
	}
	for _, ev := range events {
		for _, sk := range sinks {
			b.Run(ev.name+"/"+sk.name, func(b *testing.B) {
				l := audit.New(sk.open(b), audit.Options{Host: "web1"})
				defer l.Close()
				b.ReportAllocs()
				for b.Loop() {
					if err := ev.log(l); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func openBenchFile(b *testing.B, sync audit.SyncPolicy) audit.Sink {
	fs, err := audit.OpenFile(filepath.Join(b.TempDir(), "audit.log"), audit.FileOptions{Sync: sync})
	if err != nil {
		b.Fatal(err)
	}
	return fs
}

// BenchmarkLogParallel measures contention: records from all Ps at once.
func BenchmarkLogParallel(b *testing.B) {
	l := audit.New(openBenchFile(b, audit.SyncNone), audit.Options{Host: "web1"})
	defer l.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Exit(sampleExit); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// stdlibExit mirrors the exec.exit record for encoding/json, to compare
// the hand-rolled encoder with the standard one (encoding only).
type stdlibExit struct {
	Timestamp string `json:"@timestamp"`
	ECS       struct {
		Version string `json:"version"`
	} `json:"ecs"`
	Event struct {
		Kind     string   `json:"kind"`
		Category []string `json:"category"`
		Type     []string `json:"type"`
		Action   string   `json:"action"`
		Outcome  string   `json:"outcome"`
		Duration int64    `json:"duration"`
		Dataset  string   `json:"dataset"`
	} `json:"event"`
	Seq       uint64 `json:"seq"`
	RequestID string `json:"request_id"`
	Host      struct {
		Name string `json:"name"`
	} `json:"host"`
	Process struct {
		PID      int    `json:"pid"`
		ExitCode int    `json:"exit_code"`
		End      string `json:"end"`
	} `json:"process"`
	Sockwarden struct {
		Exit struct {
			Bytes     map[string]int64 `json:"bytes"`
			Truncated map[string]bool  `json:"truncated"`
			CPU       struct {
				User   int64 `json:"user_ns"`
				System int64 `json:"system_ns"`
			} `json:"cpu"`
			MaxRSS int64         `json:"max_rss_bytes"`
			Cgroup *stdlibCgroup `json:"cgroup,omitempty"`
		} `json:"exit"`
	} `json:"sockwarden"`
}

type stdlibCgroup struct {
	Path       string `json:"path"`
	Killed     int    `json:"killed"`
	OOMKills   int64  `json:"oom_kills"`
	MemoryPeak int64  `json:"memory_peak_bytes,omitempty"`
	PidsPeak   int64  `json:"pids_peak,omitempty"`
	CPU        int64  `json:"cpu_ns,omitempty"`
	Lingering  bool   `json:"lingering,omitempty"`
}

// BenchmarkEncodeExitStdlib is the encoding/json baseline for
// BenchmarkLog/exit/discard (which also hashes and writes).
func BenchmarkEncodeExitStdlib(b *testing.B) {
	b.ReportAllocs()
	e := sampleExit
	for b.Loop() {
		var r stdlibExit
		now := time.Now().UTC()
		r.Timestamp = now.Format("2006-01-02T15:04:05.000000000Z07:00")
		r.ECS.Version = audit.ECSVersion
		r.Event.Kind, r.Event.Category, r.Event.Type = "event", []string{"process"}, []string{"end"}
		r.Event.Action, r.Event.Outcome, r.Event.Duration, r.Event.Dataset = audit.ActionExit, "success", int64(e.Duration), "sockwarden.audit"
		r.Seq, r.RequestID, r.Host.Name = 1, e.RequestID, "web1"
		r.Process.PID, r.Process.ExitCode, r.Process.End = e.PID, e.ExitCode, r.Timestamp
		r.Sockwarden.Exit.Bytes = map[string]int64{"stdin": e.StdinBytes, "stdout": e.StdoutBytes, "stderr": e.StderrBytes}
		r.Sockwarden.Exit.Truncated = map[string]bool{"stdin": false, "stdout": false, "stderr": false}
		r.Sockwarden.Exit.CPU.User, r.Sockwarden.Exit.CPU.System = int64(e.UserCPU), int64(e.SystemCPU)
		r.Sockwarden.Exit.MaxRSS = e.MaxRSS
		if cg := e.Cgroup; cg != nil {
			r.Sockwarden.Exit.Cgroup = &stdlibCgroup{Path: cg.Path, Killed: cg.Killed, OOMKills: cg.OOMKills,
				MemoryPeak: cg.MemoryPeak, PidsPeak: cg.PidsPeak, CPU: int64(cg.CPU), Lingering: cg.Lingering}
		}
		if _, err := json.Marshal(&r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify measures verification per record.
func BenchmarkVerify(b *testing.B) {
	var m memSink
	l := audit.New(&m, audit.Options{Host: "web1"})
	for range 1000 {
		l.Exit(sampleExit)
	}
	data := m.buf.String()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var v audit.Verifier
		if err := v.Add("x", stringsReader(data)); err != nil {
			b.Fatal(err)
		}
		if r := v.Report(); !r.OK() {
			b.Fatal(r.Problem)
		}
	}
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

package bench

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Field is one reported figure: a number printed with Prec decimals, or,
// when IsText, the string Text.
type Field struct {
	Key    string
	Value  float64
	Prec   int
	Text   string
	IsText bool
}

// Num returns a numeric field.
func Num(key string, v float64, prec int) Field { return Field{Key: key, Value: v, Prec: prec} }

// Str returns a string field.
func Str(key, s string) Field { return Field{Key: key, Text: s, IsText: true} }

func (f Field) value() string {
	if f.IsText {
		return f.Text
	}
	return strconv.FormatFloat(f.Value, 'f', f.Prec, 64)
}

// Fields is a result's figures in a fixed order, workload first.
type Fields []Field

// Text formats the fields as one line of space-separated key=value pairs:
// "workload=spawn n=2000 c=8 ... errors=0". Values never hold spaces.
func (fs Fields) Text() string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.Key)
		b.WriteByte('=')
		b.WriteString(strings.ReplaceAll(f.value(), " ", "_"))
	}
	return b.String()
}

// JSON formats the fields as one JSON object, keys in order, numbers as
// JSON numbers.
func (fs Fields) JSON() string {
	b := []byte{'{'}
	for i, f := range fs {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(f.Key)
		b = append(b, k...)
		b = append(b, ':')
		if f.IsText {
			v, _ := json.Marshal(f.Text)
			b = append(b, v...)
		} else {
			b = strconv.AppendFloat(b, f.Value, 'f', f.Prec, 64)
		}
	}
	return string(append(b, '}'))
}

// Insert returns the fields with f added after the workload (first) field.
func (fs Fields) Insert(f Field) Fields {
	if len(fs) == 0 {
		return Fields{f}
	}
	return slices.Insert(slices.Clone(fs), 1, f)
}

// Get returns the field with the key.
func (fs Fields) Get(key string) (Field, bool) {
	for _, f := range fs {
		if f.Key == key {
			return f, true
		}
	}
	return Field{}, false
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Fields returns the figures of the result's workload:
//
//	spawn, baseline: workload n c rps p50_ms p90_ms p99_ms max_ms elapsed_s errors
//	echo, flood:     workload bytes mib_s elapsed_s errors
//	idle:            workload k c pid start_s rss_base_kib rss_kib kib_per_conn
//	                 fds_base fds fds_per_conn threads_base threads close_ms
//	                 rss_after_kib fds_after threads_after errors
//
// rps counts successful requests; the latencies are theirs. For idle,
// the "base" figures are the server's before the connections were opened,
// the plain ones once every program ran, the "after" ones once all were
// closed and killed.
func (r *Result) Fields() Fields {
	fs := Fields{Str("workload", string(r.Workload))}
	switch r.Workload {
	case Spawn, Baseline:
		fs = append(fs,
			Num("n", float64(r.Requests), 0),
			Num("c", float64(r.Concurrency), 0),
			Num("rps", r.Rate, 1),
			Num("p50_ms", ms(r.P50), 3),
			Num("p90_ms", ms(r.P90), 3),
			Num("p99_ms", ms(r.P99), 3),
			Num("max_ms", ms(r.Max), 3),
		)
	case Echo, Flood:
		fs = append(fs,
			Num("bytes", float64(r.Size), 0),
			Num("mib_s", r.MiBps, 1),
		)
	case Idle:
		fs = append(fs,
			Num("k", float64(r.Conns), 0),
			Num("c", float64(r.Concurrency), 0),
			Num("pid", float64(r.PID), 0),
			Num("start_s", r.StartTime.Seconds(), 3),
			Num("rss_base_kib", float64(r.RSSBaseKiB), 0),
			Num("rss_kib", float64(r.RSSKiB), 0),
			Num("kib_per_conn", r.KiBPerConn, 1),
			Num("fds_base", float64(r.FDsBase), 0),
			Num("fds", float64(r.FDs), 0),
			Num("fds_per_conn", r.FDsPerConn, 2),
			Num("threads_base", float64(r.ThreadsBase), 0),
			Num("threads", float64(r.Threads), 0),
			Num("close_ms", ms(r.CloseTime), 1),
			Num("rss_after_kib", float64(r.RSSAfterKiB), 0),
			Num("fds_after", float64(r.FDsAfter), 0),
			Num("threads_after", float64(r.ThreadsAfter), 0),
		)
	}
	if r.ServerCPU > 0 {
		switch r.Workload {
		case Spawn:
			fs = append(fs, Num("server_cpu_us", float64(r.ServerCPU.Microseconds())/float64(max(1, r.Requests)), 1))
		case Echo, Flood:
			fs = append(fs, Num("server_cpu_s", r.ServerCPU.Seconds(), 2))
		}
	}
	if r.Workload != Idle {
		fs = append(fs, Num("elapsed_s", r.Elapsed.Seconds(), 3))
	}
	return append(fs, Num("errors", float64(r.Errors), 0))
}

// Median combines the results of repeated runs of one workload: each
// numeric figure is the median of the runs' (the mean of the two middle
// ones for an even count), except errors, which is the total; a "runs"
// field follows the workload.
func Median(rs []*Result) Fields {
	if len(rs) == 0 {
		return nil
	}
	all := make([]Fields, len(rs))
	for i, r := range rs {
		all[i] = r.Fields()
	}
	out := slices.Clone(all[0])
	vals := make([]float64, len(rs))
	for j, f := range out {
		if f.IsText {
			continue
		}
		for i := range all {
			vals[i] = all[i][j].Value
		}
		if f.Key == "errors" {
			sum := 0.0
			for _, v := range vals {
				sum += v
			}
			out[j].Value = sum
			continue
		}
		out[j].Value = median(vals)
	}
	return out.Insert(Num("runs", float64(len(rs)), 0))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

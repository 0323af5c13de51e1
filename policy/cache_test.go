package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// normalized drops what legitimately differs between a cached and an
// evaluated decision.
func normalized(d Decision) Decision {
	d.EvalDuration = 0
	d.Cached = false
	return d
}

func TestCacheable(t *testing.T) {
	tests := []struct {
		file   string // under testdata/cache
		want   bool
		reason string // substring of the reason when !want
	}{
		{"pure_allow_list.rego", true, ""},
		{"imports.rego", true, ""},
		{"input_time.rego", false, "input_time.rego:6:59: reads input.time"},
		{"time_now_ns.rego", false, "time_now_ns.rego:6:59: calls time.now_ns, which is non-deterministic"},
		{"request_id.rego", false, "request_id.rego:6:65: reads input.request_id"},
		{"bare_input.rego", false, "bare_input.rego:4:8: uses the whole input document"},
		{"walk_input.rego", false, "walk_input.rego:8:18: uses the whole input document"},
		{"input_membership.rego", false, "uses the whole input document"},
		{"with_input.rego", false, "uses the whole input document"},
		{"input_dynamic_key.rego", false, "a key computed during evaluation"},
		{"input_unknown_key.rego", false, "reads input.tty, which is not part of the decision cache key"},
		{"http_send.rego", false, "calls http.send, which is non-deterministic"},
		{"unused_rand.rego", false, "calls rand.intn"},
		{"mocked_builtin.rego", false, "calls uuid.rfc4122"},
		{"x509_verify.rego", false, "calls crypto.x509.parse_and_verify_certificates, which reads the clock"},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.file, ".rego"), func(t *testing.T) {
			e := mustLoad(t, Options{Paths: []string{"testdata/cache/" + tt.file}})
			ok, reason := e.Cacheable()
			if ok != tt.want || !strings.Contains(reason, tt.reason) || ok != (reason == "") {
				t.Errorf("Cacheable() = %v, %q; want %v, %q", ok, reason, tt.want, tt.reason)
			}
			if ok != (e.cache != nil) {
				t.Errorf("Cacheable() = %v but cache = %p", ok, e.cache)
			}
		})
	}

	t.Run("example policy", func(t *testing.T) {
		if ok, reason := mustLoad(t, Options{Paths: []string{examplePolicy}}).Cacheable(); !ok {
			t.Errorf("not cacheable: %s", reason)
		}
	})
	t.Run("default policy", func(t *testing.T) {
		e, err := Default(false)
		if err != nil {
			t.Fatal(err)
		}
		if ok, reason := e.Cacheable(); !ok {
			t.Errorf("not cacheable: %s", reason)
		}
		if ok, reason := e.WithCacheSize(-1).Cacheable(); ok || !strings.Contains(reason, "turned off") {
			t.Errorf("WithCacheSize(-1): %v, %q", ok, reason)
		}
		if ok, _ := e.WithCacheSize(-1).WithCacheSize(0).Cacheable(); !ok {
			t.Error("WithCacheSize(0) after -1: not cacheable")
		}
	})
	t.Run("turned off", func(t *testing.T) {
		e := mustLoad(t, Options{Paths: []string{examplePolicy}, CacheSize: -1})
		if ok, reason := e.Cacheable(); ok || reason != "decision cache turned off (cache size < 0)" {
			t.Errorf("Cacheable() = %v, %q", ok, reason)
		}
		in := benchInput(33)
		for range 2 {
			if d := e.Evaluate(context.Background(), in); !d.Allow || d.Cached {
				t.Errorf("decision %+v", d)
			}
		}
	})
	t.Run("impure stays impure", func(t *testing.T) {
		e := mustLoad(t, Options{Paths: []string{"testdata/cache/input_time.rego"}}).WithCacheSize(100)
		if ok, reason := e.Cacheable(); ok || !strings.Contains(reason, "input.time") {
			t.Errorf("Cacheable() = %v, %q", ok, reason)
		}
	})
	t.Run("nil engine", func(t *testing.T) {
		var e *Engine
		if ok, reason := e.Cacheable(); ok || reason == "" {
			t.Errorf("Cacheable() = %v, %q", ok, reason)
		}
		if e.WithCacheSize(1) != nil {
			t.Error("WithCacheSize on nil")
		}
	})
}

// exampleRequests cover the example policy's branches: allow, the deny
// rules, admin, stranger.
func exampleRequests() []Input {
	web := Peer{PID: 4242, UID: 33, GID: 33, User: "www-data", Group: "www-data", Exe: "/usr/sbin/nginx"}
	return []Input{
		{Argv: []string{"uname", "-a"}, Exe: "/usr/bin/uname", Peer: web},
		{Argv: []string{"cat", "/srv/www/index.html"}, Exe: "/usr/bin/cat", Peer: web},
		{Argv: []string{"cat", "/etc/shadow"}, Exe: "/usr/bin/cat", Peer: web},
		{Argv: []string{"sh", "-c", "id"}, Exe: "/usr/bin/sh", Peer: web},
		{Argv: []string{"convert", "png:-", "-resize", "100x100", "jpg:-"}, Exe: "/usr/bin/convert", Peer: web},
		{Argv: []string{"convert", "text:/etc/passwd", "png:-"}, Exe: "/usr/bin/convert", Peer: web},
		{Argv: []string{"nope"}, Exe: "", Peer: web},
		{Argv: []string{"id"}, Exe: "/usr/bin/id", Peer: Peer{PID: 1, UID: 0, GID: 0, User: "root"}},
		{Argv: []string{"id"}, Exe: "/usr/bin/id", Peer: Peer{PID: 7, UID: 1000, GID: 1000}},
	}
}

func TestCachedEqualsUncached(t *testing.T) {
	uncached := mustLoad(t, Options{Paths: []string{examplePolicy}, CacheSize: -1})
	cached := mustLoad(t, Options{Paths: []string{examplePolicy}})
	ctx := context.Background()
	for i, in := range exampleRequests() {
		t.Run(strings.Join(in.Argv, " "), func(t *testing.T) {
			in.RequestID = "req-" + strconv.Itoa(i)
			in.Time = time.Date(2026, 11, 21, 10, 0, i, 0, time.UTC)
			want := uncached.Evaluate(ctx, in)
			if want.Err != nil || want.Cached {
				t.Fatalf("uncached: %+v", want)
			}
			miss := cached.Evaluate(ctx, in)
			if miss.Cached {
				t.Errorf("first evaluation came from the cache")
			}
			// Another request for the same thing: other id, later.
			in.RequestID += "-again"
			in.Time = in.Time.Add(time.Hour)
			hit := cached.Evaluate(ctx, in)
			if !hit.Cached {
				t.Errorf("second evaluation did not come from the cache")
			}
			if hit.EvalDuration <= 0 || hit.Revision != cached.Revision() {
				t.Errorf("hit: EvalDuration %v, Revision %q", hit.EvalDuration, hit.Revision)
			}
			for name, got := range map[string]Decision{"miss": miss, "hit": hit} {
				if !reflect.DeepEqual(normalized(got), normalized(want)) {
					t.Errorf("%s:\n got  %+v\n want %+v", name, got, want)
				}
			}
		})
	}
	if n, want := cached.cache.len(), len(exampleRequests()); n != want {
		t.Errorf("%d decisions cached, want %d", n, want)
	}
}

func TestImpureDecisionsVary(t *testing.T) {
	ctx := context.Background()
	for _, file := range []string{"input_time.rego", "time_now_ns.rego", "request_id.rego"} {
		t.Run(file, func(t *testing.T) {
			e := mustLoad(t, Options{Paths: []string{"testdata/cache/" + file}, CacheSize: 100})
			in := peerInput(33, "true")
			seen := map[string]bool{}
			for i := range 3 {
				in.RequestID = "req-" + strconv.Itoa(i)
				in.Time = in.Time.Add(time.Second)
				d := e.Evaluate(ctx, in)
				if !d.Allow || d.Err != nil || d.Cached || len(d.Reasons) != 1 {
					t.Fatalf("decision %+v", d)
				}
				if seen[d.Reasons[0]] {
					t.Errorf("call %d: reason %q again", i, d.Reasons[0])
				}
				seen[d.Reasons[0]] = true
			}
		})
	}
}

const fullDecisionPolicy = `package sockwarden

decision := {
	"allow": true, "message": "m", "reasons": ["first", input.argv[0]],
	"run_as": {"user": "nobody", "group": "65534", "groups": ["4", "adm"]},
	"rlimits": {"cpu": 10, "core": "unlimited"},
	"landlock": {"ro": ["/usr", "/lib"], "rw": ["/tmp"], "connect_tcp": [443], "bind_tcp": [8080]},
	"cgroup": {"memory_max": 268435456, "memory_swap_max": 0, "pids_max": 64, "cpu_max": "50000 100000"},
	"timeout": "90s", "kill_timeout": "1s",
	"env": {"PATH": "/bin"}, "cwd": "/srv", "umask": "0027",
	"max_output_bytes": 1048576, "max_stdin_bytes": 1024,
}
`

// scribble changes everything a caller could change in d, through every
// slice, map and pointer, the way a careless caller would (append to a
// slice with spare capacity, overwrite an element, set a map key).
func scribble(d *Decision) {
	d.Reasons = append(d.Reasons[:0], "scribbled")
	d.RunAs.User = "root"
	d.RunAs.Groups[0] = "0"
	d.Rlimits["cpu"] = 0
	d.Rlimits["nproc"] = 1
	d.Landlock.RO[0] = "/"
	d.Landlock.RW = append(d.Landlock.RW[:0], "/etc")
	d.Landlock.ConnectTCP[0] = 1
	d.Landlock.BindTCP[0] = 1
	*d.Cgroup.MemorySwapMax = 1
	d.Cgroup.PidsMax = 1
	d.Env["LD_PRELOAD"] = "/tmp/evil.so"
	*d.Umask = 0
}

func TestCachedDecisionIsACopy(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.rego": fullDecisionPolicy})
	pristine := mustLoad(t, Options{Paths: []string{dir}, CacheSize: -1}).Evaluate(context.Background(), peerInput(33, "true"))
	if pristine.Err != nil || pristine.Cgroup == nil || pristine.Landlock.BindTCP == nil {
		t.Fatalf("decision %+v", pristine)
	}
	e := mustLoad(t, Options{Paths: []string{dir}})
	for i := range 3 {
		d := e.Evaluate(context.Background(), peerInput(33, "true"))
		if d.Cached != (i > 0) {
			t.Errorf("call %d: Cached = %v", i, d.Cached)
		}
		if !reflect.DeepEqual(normalized(d), normalized(pristine)) {
			t.Fatalf("call %d: a caller's changes leaked into the cache:\n got  %+v\n want %+v", i, d, pristine)
		}
		scribble(&d) // on the miss (the stored copy) and on each hit
	}
}

// fill sets every field reachable from v to a non-zero value: slices of
// two elements with spare capacity, maps of one entry, allocated pointers.
// Interfaces (Err) are left alone.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i))
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 4))
		for i := range 2 {
			fill(v.Index(i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Interface:
	default:
		panic("fill: unhandled kind " + v.Kind().String())
	}
}

// memory collects the addresses of the mutable memory reachable from v:
// slice backing arrays, maps, pointed-to values.
func memory(v reflect.Value, path string, out map[uintptr]string) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			out[v.Pointer()] = path
			memory(v.Elem(), "*"+path, out)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			memory(v.Field(i), path+"."+v.Type().Field(i).Name, out)
		}
	case reflect.Slice:
		if v.Cap() > 0 {
			out[v.Pointer()] = path
		}
		for i := range v.Len() {
			memory(v.Index(i), path+"["+strconv.Itoa(i)+"]", out)
		}
	case reflect.Map:
		if !v.IsNil() {
			out[v.Pointer()] = path
		}
	}
}

// TestDecisionClone checks Clone against every field Decision has, so a
// field added later without a deep copy in Clone fails here.
func TestDecisionClone(t *testing.T) {
	var d Decision
	fill(reflect.ValueOf(&d).Elem())
	d.Err = errors.New("immutable")
	c := d.Clone()
	if !reflect.DeepEqual(c, d) {
		t.Fatalf("clone differs:\n got  %+v\n want %+v", c, d)
	}
	orig, clone := map[uintptr]string{}, map[uintptr]string{}
	memory(reflect.ValueOf(d), "d", orig)
	memory(reflect.ValueOf(c), "d", clone)
	for p, path := range clone {
		if o, ok := orig[p]; ok {
			t.Errorf("%s shares memory with the original's %s: deep-copy it in Decision.Clone", path, o)
		}
	}
	// nil stays nil, empty stays empty (nil Env = server default, empty =
	// empty environment).
	e := Decision{Reasons: []string{}, Env: map[string]string{}, Landlock: &Landlock{ConnectTCP: []int{}}}
	ec := e.Clone()
	if ec.Reasons == nil || ec.Env == nil || ec.Landlock.ConnectTCP == nil || ec.Landlock.BindTCP != nil || ec.Rlimits != nil || ec.RunAs != nil {
		t.Errorf("nil/empty not preserved: %+v", ec)
	}
}

func TestErrorsNotCached(t *testing.T) {
	badDecision := "\n# A malformed decision for one request.\ndecision := {\"allow\": true, \"timeout\": 30} if input.argv[0] == \"malformed\"\n"
	dir := writeFiles(t, map[string]string{"p.rego": failurePolicy + badDecision})
	e := mustLoad(t, Options{Paths: []string{dir}, Timeout: 20 * time.Millisecond})
	maybe := mustLoad(t, Options{Paths: []string{dir}, Query: "data.sockwarden.maybe"})
	for _, x := range []*Engine{e, maybe} {
		if ok, reason := x.Cacheable(); !ok {
			t.Fatalf("not cacheable: %s", reason)
		}
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		e     *Engine
		ctx   context.Context
		argv0 string
		want  error
	}{
		{"conflict error", e, context.Background(), "conflict", ErrEvaluation},
		{"malformed decision", e, context.Background(), "malformed", ErrDecode},
		{"timeout", e, context.Background(), "loop", ErrTimeout},
		{"caller canceled", e, canceled, "true", ErrCanceled},
		{"undefined", maybe, context.Background(), "false", ErrUndefined},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 2 {
				d := tt.e.Evaluate(tt.ctx, peerInput(33, tt.argv0))
				if d.Allow || !errors.Is(d.Err, tt.want) || d.Cached {
					t.Fatalf("call %d: %+v, want a deny with %v, not cached", i, d, tt.want)
				}
			}
			if n := tt.e.cache.len(); n != 0 {
				t.Errorf("%d decisions cached", n)
			}
		})
	}
	// A canceled context denies even when the decision is cached. (A
	// generous deadline, same cache: a loaded machine must not time out.)
	e = e.WithTimeout(10 * time.Second)
	if d := e.Evaluate(context.Background(), peerInput(33, "true")); !d.Allow || d.Cached {
		t.Fatalf("decision %+v", d)
	}
	if d := e.Evaluate(canceled, peerInput(33, "true")); d.Allow || !errors.Is(d.Err, ErrCanceled) {
		t.Errorf("canceled with a cached decision: %+v", d)
	}
	if d := e.Evaluate(context.Background(), peerInput(33, "true")); !d.Allow || !d.Cached {
		t.Errorf("decision %+v", d)
	}
}

const echoPolicy = `package sockwarden

# The decision names the request: distinct argv, distinct decisions.
decision := {"allow": true, "reasons": input.argv}
`

func TestCacheBound(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.rego": echoPolicy})
	ctx := context.Background()
	for _, size := range []int{1, 10, 300} {
		t.Run("size "+strconv.Itoa(size), func(t *testing.T) {
			e := mustLoad(t, Options{Paths: []string{dir}, CacheSize: size})
			for i := range 3 * size {
				arg := strconv.Itoa(i)
				d := e.Evaluate(ctx, peerInput(33, "echo", arg))
				if d.Err != nil || d.Cached || d.Reasons[1] != arg {
					t.Fatalf("request %d: %+v", i, d)
				}
				n := e.cache.len()
				if n > size || (len(e.cache.shards) == 1 && n != min(i+1, size)) {
					t.Fatalf("after %d requests: %d cached, bound %d", i+1, n, size)
				}
				// The newest entry is there.
				if d := e.Evaluate(ctx, peerInput(33, "echo", arg)); !d.Cached || d.Reasons[1] != arg {
					t.Fatalf("request %d again: %+v", i, d)
				}
			}
		})
	}
	t.Run("default size, sharded", func(t *testing.T) {
		c := newDecisionCache(DefaultCacheSize)
		if len(c.shards) != maxCacheShards {
			t.Errorf("%d shards", len(c.shards))
		}
		for i := range 4 * DefaultCacheSize {
			c.put([]byte(strconv.Itoa(i)), Decision{Allow: true})
		}
		if n := c.len(); n != DefaultCacheSize {
			t.Errorf("%d cached, want %d", n, DefaultCacheSize)
		}
	})
	t.Run("odd size", func(t *testing.T) {
		c := newDecisionCache(1001)
		for i := range 5000 {
			c.put([]byte(strconv.Itoa(i)), Decision{Allow: true})
		}
		if n := c.len(); n != 1001 {
			t.Errorf("%d cached in %d shards, want 1001", n, len(c.shards))
		}
	})
}

// With CLOCK eviction an entry used between insertions survives any
// number of one-off requests.
func TestCacheKeepsHotEntries(t *testing.T) {
	c := newDecisionCache(10)
	hot := []byte("hot")
	c.put(hot, Decision{Allow: true, Message: "hot"})
	for i := range 1000 {
		d, ok := c.get(hot)
		if !ok || d.Message != "hot" {
			t.Fatalf("after %d one-off entries: hot entry evicted", i)
		}
		c.put([]byte("cold"+strconv.Itoa(i)), Decision{})
	}
	if n := c.len(); n != 10 {
		t.Errorf("%d cached", n)
	}
}

func TestCacheKey(t *testing.T) {
	base := Input{
		Argv: []string{"ab", "c"}, Exe: "/usr/bin/ab",
		Peer:   Peer{PID: 1, UID: 2, GID: 3, User: "u", Group: "g", Exe: "/x"},
		Socket: "/run/s.sock", RequestID: "r1", Time: time.Unix(1, 0),
	}
	key := func(in Input) string { return string(appendCacheKey(nil, &in)) }
	same := base
	same.RequestID, same.Time = "r2", time.Unix(2, 0)
	if key(same) != key(base) {
		t.Error("RequestID or Time changed the key")
	}
	variants := map[string]func(*Input){
		"argv split":        func(in *Input) { in.Argv = []string{"a", "bc"} },
		"argv joined":       func(in *Input) { in.Argv = []string{"abc"} },
		"argv empty arg":    func(in *Input) { in.Argv = []string{"ab", "c", ""} },
		"argv nil":          func(in *Input) { in.Argv = nil },
		"exe":               func(in *Input) { in.Exe = "/usr/bin/ac" },
		"pid":               func(in *Input) { in.Peer.PID = -1 },
		"uid":               func(in *Input) { in.Peer.UID = 3 },
		"gid":               func(in *Input) { in.Peer.GID = 2 },
		"user into group":   func(in *Input) { in.Peer.User, in.Peer.Group = "", "ug" },
		"group into exe":    func(in *Input) { in.Peer.Group, in.Peer.Exe = "", "g/x" },
		"peer exe":          func(in *Input) { in.Peer.Exe = "" },
		"socket":            func(in *Input) { in.Socket = "/run/t.sock" },
		"exe into argv":     func(in *Input) { in.Argv, in.Exe = []string{"ab", "c/usr/bin/ab"}, "" },
		"big uid":           func(in *Input) { in.Peer.UID = 1<<32 - 1 },
		"argv count prefix": func(in *Input) { in.Argv = []string{"\x02ab\x01c"} },
	}
	seen := map[string]string{key(base): "base"}
	for name, change := range variants {
		in := base
		in.Argv = append([]string(nil), base.Argv...)
		change(&in)
		k := key(in)
		if other, ok := seen[k]; ok {
			t.Errorf("%s: same key as %s", name, other)
		}
		seen[k] = name
	}

	// The key must cover every field of the input document but request_id
	// and time: a field added to Input or Peer must be added to
	// appendCacheKey (and to cacheKeyInputs) or refused by impurity.
	fields := func(v any) (names []string) {
		ty := reflect.TypeOf(v)
		for i := range ty.NumField() {
			names = append(names, ty.Field(i).Name)
		}
		return names
	}
	if got, want := fmt.Sprint(fields(Input{})), "[Argv Exe Peer Socket RequestID Time]"; got != want {
		t.Errorf("Input fields %s, appendCacheKey knows %s", got, want)
	}
	if got, want := fmt.Sprint(fields(Peer{})), "[PID UID GID User Group Exe]"; got != want {
		t.Errorf("Peer fields %s, appendCacheKey knows %s", got, want)
	}
	var doc map[string]any
	b, _ := json.Marshal(base)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for k := range doc {
		if !cacheKeyInputs[k] && k != "request_id" && k != "time" {
			t.Errorf("input key %q is neither in the cache key nor refused", k)
		}
	}
}

func TestLongRequestNotCached(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.rego": echoPolicy})
	e := mustLoad(t, Options{Paths: []string{dir}})
	long := peerInput(33, "echo", strings.Repeat("x", maxCacheKeyBytes))
	for range 2 {
		if d := e.Evaluate(context.Background(), long); d.Err != nil || d.Cached {
			t.Fatalf("decision %+v", d)
		}
	}
	if n := e.cache.len(); n != 0 {
		t.Errorf("%d cached", n)
	}
}

func TestCacheSharedByWithTimeout(t *testing.T) {
	e := mustLoad(t, Options{Paths: []string{examplePolicy}})
	in := benchInput(33)
	if d := e.Evaluate(context.Background(), in); d.Cached {
		t.Fatal("first call cached")
	}
	if d := e.WithTimeout(time.Second).Evaluate(context.Background(), in); !d.Cached {
		t.Error("WithTimeout copy does not share the cache")
	}
	if d := e.WithCacheSize(0).Evaluate(context.Background(), in); d.Cached {
		t.Error("WithCacheSize copy shares the cache")
	}
}

func TestCachedDecisionJSON(t *testing.T) {
	b, err := json.Marshal(Decision{Allow: true, Cached: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"cached":true`)) {
		t.Errorf("JSON %s", b)
	}
	b, _ = json.Marshal(Decision{Allow: true})
	if bytes.Contains(b, []byte(`cached`)) {
		t.Errorf("JSON %s", b)
	}
}

// TestCacheConcurrent: 8 goroutines share a cache smaller than the set of
// requests (so entries are evicted while others read them), and scribble
// over every decision they get. Run with -race.
func TestCacheConcurrent(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.rego": fullDecisionPolicy})
	type policyCase struct {
		name string
		opts Options
		reqs []Input
	}
	var full []Input
	for i := range 12 {
		full = append(full, peerInput(33, "prog"+strconv.Itoa(i)))
	}
	for _, pc := range []policyCase{
		{"example", Options{Paths: []string{examplePolicy}, CacheSize: 4}, exampleRequests()},
		{"full decision", Options{Paths: []string{dir}, CacheSize: 5}, full},
	} {
		t.Run(pc.name, func(t *testing.T) {
			ctx := context.Background()
			want := make([]Decision, len(pc.reqs))
			off := pc.opts
			off.CacheSize = -1
			uncached := mustLoad(t, off)
			for i, in := range pc.reqs {
				want[i] = normalized(uncached.Evaluate(ctx, in))
			}
			e := mustLoad(t, pc.opts)
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				hits int
			)
			for g := range 8 {
				wg.Go(func() {
					n := 0
					for i := range 150 {
						// Mostly the first few requests, sometimes the others.
						r := (g + i) % 3
						if i%4 == 0 {
							r = (g*7 + i) % len(pc.reqs)
						}
						d := e.Evaluate(ctx, pc.reqs[r])
						if d.Cached {
							n++
						}
						if !reflect.DeepEqual(normalized(d), want[r]) {
							t.Errorf("request %d:\n got  %+v\n want %+v", r, d, want[r])
							return
						}
						if d.RunAs != nil && d.Landlock != nil && d.Cgroup != nil && d.Umask != nil {
							scribble(&d)
						} else {
							d.Reasons = append(d.Reasons[:0], "scribbled")
							for k := range d.Rlimits {
								d.Rlimits[k] = 0
							}
						}
					}
					mu.Lock()
					hits += n
					mu.Unlock()
				})
			}
			wg.Wait()
			if hits == 0 {
				t.Error("no cache hits")
			}
			if n := e.cache.len(); n > pc.opts.CacheSize {
				t.Errorf("%d cached, bound %d", n, pc.opts.CacheSize)
			}
		})
	}
}

// Lookup answers only from the cache: nothing before the first
// evaluation, then what Evaluate would return, a copy each time; never
// anything for a policy that is not cacheable.
func TestLookup(t *testing.T) {
	ctx := context.Background()
	e := mustLoad(t, Options{Paths: []string{examplePolicy}})
	in := exampleRequests()[0]
	if d, ok := e.Lookup(ctx, in); ok {
		t.Fatalf("Lookup before any evaluation: %+v", d)
	}
	want := e.Evaluate(ctx, in)
	got, ok := e.Lookup(ctx, in)
	if !ok || !got.Cached || got.Revision != e.Revision() {
		t.Fatalf("Lookup after Evaluate: %v %+v", ok, got)
	}
	if !reflect.DeepEqual(normalized(got), normalized(want)) {
		t.Errorf("Lookup:\n got  %+v\n want %+v", got, want)
	}
	if len(got.Reasons) > 0 {
		got.Reasons[0] = "scribbled"
		if again, _ := e.Lookup(ctx, in); again.Reasons[0] == "scribbled" {
			t.Error("Lookup returned the cached decision itself, not a copy")
		}
	}
	other := in
	other.Argv = append([]string{}, in.Argv...)
	other.Argv = append(other.Argv, "x")
	if _, ok := e.Lookup(ctx, other); ok {
		t.Error("Lookup found a decision for another argv")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, ok := e.Lookup(canceled, in); ok {
		t.Error("Lookup answered with a canceled context")
	}

	impure := mustLoad(t, Options{Paths: []string{"testdata/cache/time_now_ns.rego"}})
	pin := peerInput(33, "true")
	impure.Evaluate(ctx, pin)
	if _, ok := impure.Lookup(ctx, pin); ok {
		t.Error("Lookup answered for a policy that is not cacheable")
	}
}

// Package fdcount counts a process's open descriptors for the leak
// checks of tests, leaving out those that the request cgroup pool keeps
// on purpose: an idle pooled cgroup holds its directory, cgroup.events
// and cpu.stat open for the next request (sandbox/internal/cgroup), so
// their number may grow under a load, up to three per pooled cgroup.
package fdcount

import (
	"os"
	"regexp"
	"strconv"
)

// pooled matches what a pooled cgroup's descriptors point to.
var pooled = regexp.MustCompile(`/req-[0-9]+-[0-9]+(/(cgroup\.events|cpu\.stat))?$`)

// Count returns how many descriptors process pid (0: this process) has
// open, those of pooled cgroups aside, and how many those are.
func Count(pid int) (n, pooledCgroup int, err error) {
	dir := "/proc/self/fd/"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/fd/"
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		if target, err := os.Readlink(dir + e.Name()); err == nil && pooled.MatchString(target) {
			pooledCgroup++
			continue
		}
		n++
	}
	return n, pooledCgroup, nil
}

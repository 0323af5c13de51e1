package sandbox

import "github.com/sockwarden/sockwarden/sandbox/internal/cgroup"

// The per-request cgroups live in sandbox/internal/cgroup; these are the
// names sandbox's API gives its types. See the package documentation,
// section "Cgroups".
type (
	// CgroupSpec asks for a cgroup of the child's own with resource
	// limits (Spec.Cgroup).
	CgroupSpec = cgroup.Spec
	// CgroupOptions configure the per-request cgroups (Options.Cgroups).
	CgroupOptions = cgroup.Options
	// CgroupReport tells what per-request cgroup containment is available
	// (Capabilities.Cgroups).
	CgroupReport = cgroup.Report
	// ProcessCgroup describes a running child's cgroup (Process.Cgroup).
	ProcessCgroup = cgroup.ProcessInfo
	// CgroupStats is what Wait learned from a child's cgroup
	// (State.Cgroup).
	CgroupStats = cgroup.Stats
	// CgroupUnsupportedError is returned by Start when a Spec's Cgroup
	// cannot be enforced and is not BestEffort.
	CgroupUnsupportedError = cgroup.UnsupportedError
)

// ValidateCPUMax checks a cpu.max value: "QUOTA PERIOD", "max PERIOD",
// "QUOTA" or "max", in microseconds.
func ValidateCPUMax(s string) error { return cgroup.ValidateCPUMax(s) }

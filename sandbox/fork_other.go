//go:build linux && !amd64 && !arm64

package sandbox

import "errors"

// forkExec needs fork.go's clone, written for amd64 and arm64 only.
func forkExec(p *forkPlan) (pid, pidfd int, err error) {
	return 0, -1, errors.New("sandbox: this architecture is not supported (amd64 and arm64 are)")
}

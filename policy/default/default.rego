# sockwarden's built-in default policy, used when no policy is configured.
#
# It serves only the server's own user: a caller whose kernel-verified uid
# (SO_PEERCRED) equals the uid the server runs as may run anything that user
# could run anyway, but inside a sandbox with conservative limits and a
# read-only view of the file system. Everybody else is denied.
#
# policy.Default() injects the server's identity as data:
#   data.sockwarden.server.uid        the uid the server runs as
#   data.sockwarden.server.gid        its gid
# (`sockwarden check` without -p uses this policy with the uid of the
# process running the check.)
package sockwarden

server_identity := data.sockwarden.server

default decision := {
	"allow": false,
	"message": "this sockwarden runs its built-in default policy, which serves only the user the server runs as; ask the operator to configure a policy (-p)",
	"reasons": ["default policy: caller uid is not the server's uid"],
}

decision := object.union(allowed, run_as) if {
	is_number(server_identity.uid)
	input.peer.uid == server_identity.uid
}

allowed := {
	"allow": true,
	"reasons": [sprintf("default policy: caller uid %d is the server's own uid", [input.peer.uid])],
	# No "as" (address space) limit: it breaks V8, the JVM and WebAssembly
	# runtimes, which reserve large virtual ranges up front. No "timeout":
	# the server's -t / config deadline applies.
	"rlimits": {
		"cpu": 60, # seconds of CPU time
		"core": 0, # no core dumps (they could leak memory contents)
		"fsize": 67108864, # 64 MiB per file written
		"nofile": 1024,
		# RLIMIT_NPROC counts every process of the child's real uid, not
		# only the child's descendants: generous enough not to trip on the
		# user's other processes, small enough to stop a fork bomb.
		"nproc": 512,
	},
	# A read-only view of the whole file system, as any local user has
	# (file permissions still apply): the caller's scripts run wherever
	# they are, `ls .`, `tail` of a log and /proc work; nothing can be
	# written but /dev/null.
	# /tmp is deliberately not writable: it is shared with every other
	# user and service, so write access would let a sandboxed child plant
	# files or symlinks for others and stash data in a world-readable place.
	# A program that needs scratch space should get a policy with a private
	# writable directory.
	"landlock": {
		"ro": ["/"],
		"rw": ["/dev/null"],
	},
	"cwd": "/",
	"umask": "0077",
}

# A server running as root must not run children as root: each runs as a
# uid of its own from [sandbox] dynamic_uids (so requests cannot reach each
# other through signals, ptrace, /proc, keyrings, RLIMIT_NPROC or file
# ownership), or, with no dynamic uids configured, as nobody/nogroup
# (numeric, as the names differ between distributions) with no
# supplementary groups.
run_as := {"run_as": {"dynamic": true}} if {
	server_identity.uid == 0
	server_identity.dynamic_uids == true
} else := {"run_as": {"user": "65534", "group": "65534", "groups": []}} if {
	server_identity.uid == 0
} else := {}

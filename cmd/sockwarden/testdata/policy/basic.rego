# A small policy for the end-to-end tests of the policy gate.
package sockwarden

default decision := {"allow": false, "message": "not on the list", "reasons": ["basic: argv[0] not allowed"]}

allowed := {"/usr/bin/sh", "/usr/bin/id", "/usr/bin/env", "/usr/bin/echo"}

decision := {
	"allow": true,
	"reasons": ["basic: allowed program"],
	"run_as": {"user": "65534", "group": "65534", "groups": []},
	"rlimits": {"fsize": 1000, "core": 0},
	"landlock": {"ro": ["/usr", "/lib", "/lib64", "/bin", "/etc"], "rw": ["/dev/null"]},
	"env": {"PATH": "/usr/bin:/bin", "PROFILE": "basic"},
	"umask": "0077",
} if {
	input.exe in allowed
	input.peer.uid == 0
}

# Two different decisions for one input: an evaluation error, which must deny.
decision := {"allow": true} if input.argv[0] == "boom"

decision := {"allow": false} if input.argv[0] == "boom"

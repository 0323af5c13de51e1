# A small policy for the tests: allow the uids in data.sockwarden.config.uids.
package sockwarden

cfg := data.sockwarden.config

default decision := {"allow": false, "message": "uid not allowed"}

decision := {
	"allow": true,
	"reasons": [cfg.source],
	"rlimits": {"cpu": 10, "nofile": 64},
	"timeout": "30s",
} if {
	input.peer.uid in cfg.uids
}

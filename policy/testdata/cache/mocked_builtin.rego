# A function replaced with a non-deterministic builtin.
package sockwarden

stamp(_) := "fixed"

default decision := {"allow": false}

decision := {"allow": true, "reasons": [s]} if {
	input.peer.uid == 33
	s := stamp("k") with stamp as uuid.rfc4122
}

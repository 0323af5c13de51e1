# with input as ...: replaces the whole input; refused (conservative).
package sockwarden

default decision := {"allow": false}

decision := {"allow": true} if {
	input.peer.uid == 33
	inner with input as {"peer": {"uid": 0}}
}

inner if input.peer.uid == 0

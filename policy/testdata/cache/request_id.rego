# The request id in a reason.
package sockwarden

default decision := {"allow": false}

decision := {"allow": true, "reasons": [concat(" ", ["request", input.request_id])]} if {
	input.peer.uid == 33
}

# time.now_ns() is the request time: differs per request.
package sockwarden

default decision := {"allow": false}

decision := {"allow": true, "reasons": [sprintf("at %d", [time.now_ns()])]} if {
	input.peer.uid == 33
}

# No default decision: undefined for most requests (fails the smoke test).
package sockwarden

decision := {"allow": true} if input.peer.uid == 33

# The whole input document held in a rule.
package sockwarden

req := input

default decision := {"allow": false}

decision := {"allow": true} if req.peer.uid == 33

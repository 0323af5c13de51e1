# rand.intn in a helper the decision never uses: still not cacheable
# (conservative).
package sockwarden

default decision := {"allow": false}

decision := {"allow": true} if input.peer.uid == 33

sample if rand.intn("audit", 100) < 5

# http.send, in a rule the smoke request never reaches: the analysis looks
# at every rule, reached or not.
package sockwarden

default decision := {"allow": false}

decision := {"allow": resp.status_code == 200} if input.peer.uid == 33

resp := http.send({"method": "GET", "url": "http://127.0.0.1:1/allowed"})

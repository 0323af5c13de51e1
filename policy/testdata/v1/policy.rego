package sockwarden

# The same policy in Rego v1.

default decision := {"allow": false}

tools := {"uname", "id"}

decision := {"allow": true, "reasons": reasons} if {
	tools[input.argv[0]]
}

reasons contains r if {
	r := sprintf("%s is a tool", [input.argv[0]])
}

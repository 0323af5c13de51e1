package sockwarden

# Rego v0 (OPA 0.x): rules without "if", partial sets without "contains".

default decision = {"allow": false}

tools := {"uname", "id"}

decision = {"allow": true, "reasons": reasons} {
	tools[input.argv[0]]
}

reasons[r] {
	r := sprintf("%s is a tool", [input.argv[0]])
}

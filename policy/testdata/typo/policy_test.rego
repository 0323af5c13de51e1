package sockwarden

# The policy's own tests: they compare values, and pass under opa test.

test_convert_allowed if {
	decision.allow with input as {"argv": ["convert"]}
}

test_uname_allowed if {
	decision.allow with input as {"argv": ["uname"]}
}

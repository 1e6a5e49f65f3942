"""Image input: URL fetching behind the address rules, decoding within budgets, and the content-addressed
store of uploaded pictures."""

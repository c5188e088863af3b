"""Use cases that the API and the operators ask for: contacts, batches, accounts, operations,
webhook endpoints. May import store, domain and the top-level modules; never runtime or cli."""

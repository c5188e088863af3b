"""contact-provisioner: the worker side and the use cases. Each folder is one layer; its
`__init__` says what lives there and what it may import (enforced by `make lint`)."""

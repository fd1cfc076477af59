package main

import (
	"github.com/amtops/amtops/internal/pki/builtin"
)

// ca is the built-in CA's own storage: what it issued and revoked,
// whatever the site's records say.
func (r *runState) ca() builtin.Storage { return builtin.Sealed(r.st.Blobs("ca"), r.sealer) }

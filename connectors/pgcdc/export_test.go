package pgcdc

// SeedDelivered makes each stream of r start as if it had delivered the
// commits of the transactions xids.
func SeedDelivered(r *Reader, xids ...uint32) { r.seeded = xids }

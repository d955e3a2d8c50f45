package coordinator

import "time"

// checkTimeout bounds the checks of one apply --check: connecting to the
// spec's source and sink and looking at what it names.
const checkTimeout = 20 * time.Second

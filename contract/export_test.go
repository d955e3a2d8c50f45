package contract

// HashFunc is the hash action without its memo, for benchmarks.
func HashFunc(key []byte) func(dst, v []byte) ([]byte, error) {
	return newHasher(newHMACKey(key)).apply
}

// ActionFunc is the action of column v of the contract y (its key given),
// memo included, for benchmarks.
func ActionFunc(y, key []byte) (func(dst, v []byte) ([]byte, error), error) {
	s, ps := Parse(y)
	if len(ps) > 0 {
		return nil, &Error{Problems: ps}
	}
	c, err := Compile(s, func(string) (string, bool) { return string(key), true })
	if err != nil {
		return nil, err
	}
	fn, err := c.dataset.column(c.keys, "v")
	if err != nil {
		return nil, err
	}
	return fn.fn, nil
}

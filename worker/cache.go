package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// openCache keeps the sources or sinks a worker opened, one per connector
// kind and configuration, for the worker's life: opening one may cost a
// database connection. Concurrent tasks that need the same connector share
// one opening; a failed opening is not kept, so the next task tries again.
type openCache[T io.Closer] struct {
	open func(ctx context.Context, kind string, config json.RawMessage) (T, error)

	mu      sync.Mutex
	entries map[string]*openEntry[T]
}

type openEntry[T any] struct {
	kind  string
	ready chan struct{} // closed when v and err are set
	v     T
	err   error
}

func newOpenCache[T io.Closer](open func(context.Context, string, json.RawMessage) (T, error)) *openCache[T] {
	return &openCache[T]{open: open, entries: map[string]*openEntry[T]{}}
}

// get returns the connector for kind and config, opening it under ctx if no
// task opened it before.
func (c *openCache[T]) get(ctx context.Context, kind string, config json.RawMessage) (T, error) {
	key := kind + "\x00" + string(config)
	c.mu.Lock()
	e, ok := c.entries[key]
	if !ok {
		e = &openEntry[T]{kind: kind, ready: make(chan struct{})}
		c.entries[key] = e
	}
	c.mu.Unlock()
	if !ok {
		e.v, e.err = c.open(ctx, kind, config)
		if e.err != nil {
			c.mu.Lock()
			delete(c.entries, key)
			c.mu.Unlock()
		}
		close(e.ready)
	}
	select {
	case <-e.ready:
		return e.v, e.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// close closes every connector that was opened. It is called once no task
// uses the cache any more.
func (c *openCache[T]) close() error {
	c.mu.Lock()
	keys := make([]string, 0, len(c.entries))
	for k := range c.entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	entries := make([]*openEntry[T], 0, len(keys))
	for _, k := range keys {
		entries = append(entries, c.entries[k])
	}
	clear(c.entries)
	c.mu.Unlock()
	var errs []error
	for _, e := range entries {
		<-e.ready
		if e.err != nil {
			continue
		}
		if err := e.v.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s connector: %w", e.kind, err))
		}
	}
	return errors.Join(errs...)
}

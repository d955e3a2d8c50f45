package cdcapply_test

import (
	"context"
	"sync"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// memory is an in-memory Applier recording what it applied.
type memory struct {
	mu      sync.Mutex
	events  []connectors.Event
	batches int
	// hook, when set, runs before a batch is applied; an error fails it.
	hook func(batch int, events []connectors.Event) error
}

func (m *memory) Applied(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 {
		return 0, nil
	}
	return m.events[len(m.events)-1].Seq, nil
}

func (m *memory) Apply(_ context.Context, events []connectors.Event) error {
	m.mu.Lock()
	hook := m.hook
	m.batches++
	n := m.batches
	m.mu.Unlock()
	if hook != nil {
		if err := hook(n, events); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var applied uint64 // the offset: events of one message share their Seq
	if len(m.events) > 0 {
		applied = m.events[len(m.events)-1].Seq
	}
	for _, ev := range events {
		if ev.Seq > applied {
			m.events = append(m.events, ev)
		}
	}
	return nil
}

func (m *memory) Close() error { return nil }

func (m *memory) seqs() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for _, ev := range m.events {
		out = append(out, ev.Seq)
	}
	return out
}

var (
	T = protocol.Text
	N = protocol.NullValue
	U = protocol.UnchangedValue
)

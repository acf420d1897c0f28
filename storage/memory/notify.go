package memory

import "context"

// listener is one channel handed out by Listen.
type listener struct {
	ch   chan struct{}
	stop func() bool // unregisters the context callback that drops the listener
}

// Listen returns a channel that receives a value, coalesced, whenever a workflow may have
// become runnable: created, woken, retried, released, or left due at once by FinishRun. It
// lets workers of several engines over one Store pick up each other's work without waiting
// for a poll. Sends never block the store. The channel is closed when ctx ends or the store
// is closed.
func (s *Store) Listen(ctx context.Context) (<-chan struct{}, error) {
	if err := s.begin(ctx, "listen"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	l := &listener{ch: make(chan struct{}, 1)}
	s.listeners[l] = struct{}{}
	l.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.listeners[l]; ok {
			s.dropListener(l)
		}
	})
	return l.ch, nil
}

// dropListener closes l's channel and forgets it. The caller holds s.mu.
func (s *Store) dropListener(l *listener) {
	l.stop()
	delete(s.listeners, l)
	close(l.ch)
}

// notify signals every listener; a listener with a signal pending already keeps that one.
// The caller holds s.mu.
func (s *Store) notify() {
	for l := range s.listeners {
		select {
		case l.ch <- struct{}{}:
		default:
		}
	}
}

package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// maxLogChunk bounds one read of a log: an API answer without follow, or one build_log RPC answer.
const maxLogChunk = 1 << 20

// logStore keeps build logs as files, <data dir>/builds/<id>.log, on the node that ran the build. Each attempt
// that runs here appends to the file. While an attempt runs, its log is active: readers can wait for more.
type logStore struct {
	dir string

	mu     sync.Mutex
	active map[string]*buildLog
}

func newLogStore(dir string) *logStore {
	return &logStore{dir: dir, active: map[string]*buildLog{}}
}

func (s *logStore) path(id string) string { return filepath.Join(s.dir, id+".log") }

// open starts writing the log of build id (appending to an earlier attempt's) and makes it active.
func (s *logStore) open(id string) (*buildLog, error) {
	f, err := os.OpenFile(s.path(id), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the build log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open the build log: %w", err)
	}
	l := &buildLog{store: s, id: id, f: f, size: fi.Size(), changed: make(chan struct{})}
	s.mu.Lock()
	s.active[id] = l
	s.mu.Unlock()
	return l, nil
}

// logChunk is a piece of a build log and where the next read starts. Active says the build still writes to it
// on this node, so a follower should ask again.
type logChunk struct {
	Data   []byte `json:"data"`
	Next   int64  `json:"next"`
	Active bool   `json:"active"`
}

// read returns up to max bytes of build id's log from off. With wait > 0 and nothing to read yet from an
// active log, it waits up to wait for more (or for the log to close).
func (s *logStore) read(ctx context.Context, id string, off int64, max int, wait time.Duration) (logChunk, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		// The channel is taken under the store's lock: Close removes the log from active before it closes
		// its channel, so a log seen active here is certain to wake this reader when it closes.
		s.mu.Lock()
		l := s.active[id]
		var changed <-chan struct{}
		if l != nil {
			changed = l.watch()
		}
		s.mu.Unlock()
		data, err := readAt(s.path(id), off, max)
		if err != nil {
			return logChunk{}, err
		}
		c := logChunk{Data: data, Next: off + int64(len(data)), Active: l != nil}
		if len(data) > 0 || wait <= 0 || l == nil {
			return c, nil
		}
		select {
		case <-changed:
		case <-timeout:
			return c, nil
		case <-ctx.Done():
			return c, nil
		}
	}
}

func readAt(path string, off int64, max int) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the build log: %w", err)
	}
	defer f.Close()
	buf := make([]byte, max)
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read the build log: %w", err)
	}
	return buf[:n], nil
}

// buildLog is the log of one attempt being written on this node. Writes go straight to the file (no buffering:
// followers see output as the script prints it) and wake readers.
type buildLog struct {
	store *logStore
	id    string

	mu      sync.Mutex
	f       *os.File
	size    int64
	err     error
	changed chan struct{}
}

// Write appends to the log. A failing disk does not fail the build: the first error is kept and later writes
// are dropped.
func (l *buildLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil && l.f != nil {
		n, err := l.f.Write(p)
		l.size += int64(n)
		l.err = err
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

func (l *buildLog) watch() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Close ends the attempt's log: readers waiting on it return, and followers stop once they have read it all.
func (l *buildLog) Close() error {
	l.store.mu.Lock()
	if l.store.active[l.id] == l {
		delete(l.store.active, l.id)
	}
	l.store.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if l.f != nil {
		err = l.f.Close()
		l.f = nil
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return errors.Join(l.err, err)
}

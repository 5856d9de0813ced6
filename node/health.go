package node

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// healthProbeEvery bounds how often /healthz touches the disk: a flood of health checks costs one write a second.
const healthProbeEvery = time.Second

// diskHealth knows whether the node can write its Raft log: from the log store's own writes, and from a small
// probe file written and synced in the log's directory (a follower with nothing to append writes nothing else).
type diskHealth struct {
	dir string

	mu       sync.Mutex
	logErr   error // the last failed log write, until one succeeds
	probed   time.Time
	probeErr error
}

func (d *diskHealth) record(err error) {
	d.mu.Lock()
	d.logErr = err
	d.mu.Unlock()
}

// check returns why the node cannot write its log, or nil.
func (d *diskHealth) check() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Since(d.probed) >= healthProbeEvery {
		d.probed = time.Now()
		d.probeErr = probeWrite(d.dir)
	}
	if d.probeErr != nil {
		return d.probeErr
	}
	if d.logErr != nil {
		return fmt.Errorf("the last write to the raft log failed: %w", d.logErr)
	}
	return nil
}

// probeWrite writes, syncs and removes a new file in dir (a new one each time: rewriting the same file would
// reuse its blocks and pass on a full disk).
func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".healthz-*")
	if err != nil {
		return fmt.Errorf("cannot write in the raft log's directory %s: %w", dir, err)
	}
	defer os.Remove(f.Name())
	_, werr := f.Write([]byte(time.Now().UTC().Format(time.RFC3339Nano)))
	serr := f.Sync()
	cerr := f.Close()
	for _, err := range []error{werr, serr, cerr} {
		if err != nil {
			return fmt.Errorf("cannot write in the raft log's directory %s: %w", dir, err)
		}
	}
	return nil
}

// watchedLogStore tells diskHealth how the log's own writes go.
type watchedLogStore struct {
	raft.LogStore
	health *diskHealth
}

func (s *watchedLogStore) StoreLog(l *raft.Log) error {
	err := s.LogStore.StoreLog(l)
	s.health.record(err)
	return err
}

func (s *watchedLogStore) StoreLogs(ls []*raft.Log) error {
	err := s.LogStore.StoreLogs(ls)
	s.health.record(err)
	return err
}

// CheckDisk returns why the node cannot write its Raft log now, or nil (GET /healthz).
func (n *Node) CheckDisk() error { return n.disk.check() }

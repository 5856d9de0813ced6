package node

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CorruptDataError says that a file of the data dir cannot be read, and how to bring the server back.
type CorruptDataError struct {
	File   string
	Reason string
}

func (e *CorruptDataError) Error() string {
	return fmt.Sprintf("%s is corrupt (%s), so this server cannot start from its data dir. Bring it back from "+
		"the mesh: stop it, move the data dir aside, and `node join` it again with a join token (`node token "+
		"join` on a healthy server); its state comes back from the other servers. A single-server mesh "+
		"restores the data dir from a backup instead (docs/operations.md)", e.File, e.Reason)
}

// checkRaftLog reads every record of the Raft log file at path, if it exists, and returns a *CorruptDataError
// when that fails. bbolt panics on a damaged page at the first read that reaches it (often in one of Raft's own
// goroutines, with a goroutine dump); reading it all once, here, turns that into one clear error.
func checkRaftLog(path string) (err error) {
	if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = &CorruptDataError{File: path, Reason: fmt.Sprint(r)}
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("open raft log %s: it is locked (is another node running on this data dir?)", path)
		}
		return &CorruptDataError{File: path, Reason: err.Error()}
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error { return nil })
		})
	})
	if err != nil {
		return &CorruptDataError{File: path, Reason: err.Error()}
	}
	return nil
}

package artifact

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Remove deletes an artifact and everything stored for it.
func (s *Store) Remove(digest string) error {
	s.mu.Lock()
	e := s.arts[digest]
	if e == nil {
		s.mu.Unlock()
		return nil
	}
	// Rename first: a crash after it leaves trash and an orphan archive, both removed by the next New, and
	// never an artifact that looks partly present.
	trash := filepath.Join(s.dir, trashPrefix+digest+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(s.artDir(digest), trash); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("remove artifact %s: %w", short(digest), err)
	}
	delete(s.arts, digest)
	e.removed = true
	e.closeFiles()
	err := os.Remove(s.archivePath(digest))
	s.notifyLocked()
	s.mu.Unlock()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove artifact %s: %w", short(digest), err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove artifact %s: %w", short(digest), err)
	}
	return nil
}

// GC removes every artifact for which keep returns false (complete or not) and returns their digests. The
// caller's keep must include downloads in progress.
func (s *Store) GC(keep func(digest string) bool) ([]string, error) {
	var removed []string
	var errs []error
	for _, m := range s.List() {
		if keep(m.Digest) {
			continue
		}
		if err := s.Remove(m.Digest); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, m.Digest)
	}
	return removed, errors.Join(errs...)
}

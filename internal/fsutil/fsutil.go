// Package fsutil holds the file operations that every part of Shoal must do one way: a state file, a key, a
// deployed script and a CLI config are all written so that a crash leaves the old content or the new.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// TmpSuffix ends the names of WriteAtomic's temporary files, so that a directory scan can tell a leftover of a
// crash from a real file.
const TmpSuffix = ".tmp"

// WriteAtomic writes data to path so that readers, and the disk after a crash, hold the old content or the new,
// never a part: a temporary file in the same directory (".<name>.<random>.tmp") gets mode before any byte is
// written, is written and fsynced, renamed over path, and the directory is fsynced so the rename lasts.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*"+TmpSuffix)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, which makes a rename, a new entry or a removal in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

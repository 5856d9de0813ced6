package deployer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Defaults of the exec log rotation (Options.ExecLogMax, ExecLogKeep, ExecLogCheck).
const (
	DefaultExecLogMax   = 10 << 20
	DefaultExecLogKeep  = 3
	DefaultExecLogCheck = time.Second
)

// execLogName is the file, in an environment directory, that the Exec processes append their output to.
const execLogName = "exec.log"

// maxExecLogChunk bounds one read of an exec log (an API answer, or one exec_log RPC answer).
const maxExecLogChunk = 1 << 20

// rotateExecLog rotates an exec log by copy and truncate once it is larger than max: exec.log.(keep-1) moves
// to exec.log.keep (the oldest is overwritten), ..., the log is copied to exec.log.1, then truncated to zero.
//
// Why copy-truncate and not rename: the Exec processes hold the log open (O_APPEND, their own descriptor, so
// they outlive the agent) and nothing can make them reopen it. After a rename they would keep writing into
// exec.log.1 forever. O_APPEND makes every write land at the file's current end, so after the truncation their
// next write starts the file again at offset 0, with no hole. The price: what they write between the copy and
// the truncation (microseconds, at the sizes involved) is lost. The note at the top of the new log says where
// the earlier output went.
func rotateExecLog(path string, max int64, keep int) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil || fi.Size() <= max {
		return false, err
	}
	if keep < 1 {
		keep = 1
	}
	for i := keep - 1; i >= 1; i-- {
		err := os.Rename(path+"."+strconv.Itoa(i), path+"."+strconv.Itoa(i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	if err := copyTruncate(path, path+".1"); err != nil {
		return false, err
	}
	appendLogNote(path, fmt.Sprintf("log rotated at %s; the earlier output is in %s.1", time.Now().UTC().Format(time.RFC3339), execLogName))
	return true, nil
}

// copyTruncate copies src to dst (through a temporary file renamed in, so dst is never half written) and
// truncates src. The copy is read again up to the end just before the truncation, so what is lost is only what
// is written in the moment between that last read and the truncate call.
func copyTruncate(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	for i := 0; err == nil && i < 3; i++ {
		var n int64
		if n, err = io.Copy(out, in); n == 0 {
			break // caught up with the writers
		}
	}
	if err == nil {
		err = in.Truncate(0)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// rotateLoop rotates the exec log of every environment directory on this node every ExecLogCheck.
func (d *Deployer) rotateLoop() {
	defer d.wg.Done()
	t := time.NewTicker(d.opts.ExecLogCheck)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		paths, _ := filepath.Glob(filepath.Join(d.n.DataDir(), "apps", "*", "*", execLogName))
		for _, p := range paths {
			if _, err := rotateExecLog(p, d.opts.ExecLogMax, d.opts.ExecLogKeep); err != nil {
				d.log.Warn("rotate an exec log", "path", p, "err", err)
			}
		}
	}
}

// execLogChunk is a piece of an exec log and where the next read starts.
type execLogChunk struct {
	Data []byte `json:"data"`
	Next int64  `json:"next"`
	// Missing means the environment has no exec log on this server (nothing ran here yet).
	Missing bool `json:"missing,omitempty"`
}

// readExecLog reads an exec log. With off < 0 it returns the last tail lines (all that fits in one chunk when
// tail <= 0). Otherwise it returns what follows off; when the log is now shorter than off it was rotated, and
// the rest of the rotated copy (exec.log.1) comes first, then the new log from its start.
func readExecLog(path string, off int64, tail int) (execLogChunk, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return execLogChunk{Missing: true}, nil
	}
	if err != nil {
		return execLogChunk{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return execLogChunk{}, err
	}
	size := fi.Size()
	if off < 0 {
		start := max(size-maxExecLogChunk, 0)
		b, err := io.ReadAll(io.NewSectionReader(f, start, size-start))
		if err != nil {
			return execLogChunk{}, err
		}
		if start > 0 {
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				b = b[i+1:] // start on a whole line
			}
		}
		return execLogChunk{Data: lastLines(b, tail), Next: start + int64(len(b))}, nil
	}
	if off > size {
		// Rotated since the last read: finish the copy, then start the new log at 0.
		var rest []byte
		if old, err := os.Open(path + ".1"); err == nil {
			ofi, _ := old.Stat()
			if ofi != nil && ofi.Size() >= off {
				rest, _ = io.ReadAll(io.NewSectionReader(old, off, min(ofi.Size()-off, maxExecLogChunk)))
			}
			old.Close()
		}
		return execLogChunk{Data: rest, Next: 0}, nil
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, min(size-off, maxExecLogChunk)))
	if err != nil {
		return execLogChunk{}, err
	}
	return execLogChunk{Data: b, Next: off + int64(len(b))}, nil
}

// lastLines returns the last n lines of b (all of b when n <= 0).
func lastLines(b []byte, n int) []byte {
	if n <= 0 {
		return b
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

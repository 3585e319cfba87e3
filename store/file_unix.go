//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// owned is a database file this process holds: an open descriptor with an
// exclusive flock(2) on it, so that a second process is refused, and the
// file's identity, so that a deleted or replaced file is noticed.
//
// The descriptor stays open until the database is closed: closing any
// descriptor of a file drops the process's POSIX record locks on it,
// SQLite's included.
type owned struct {
	path string
	f    *os.File
	dev  uint64
	ino  uint64
	// The write-ahead log's identity, once it exists: deleting it under a
	// running service loses what was committed since the last checkpoint.
	mu     sync.Mutex
	walIno uint64
}

// ErrInUse is returned when another process holds the database.
var ErrInUse = errors.New("another switchboard is using this database")

func own(path string) (*owned, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w (it holds a lock on the file); stop it first, or give this one another --data file", path, ErrInUse)
		}
		return nil, fmt.Errorf("%s: cannot lock the file: %w", path, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	return &owned{path: path, f: f, dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil
}

// size is the file's size in bytes.
func (o *owned) size() (int64, error) {
	fi, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// check reports whether the path still names the file opened.
func (o *owned) check() error {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(o.f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: cannot stat the open database: %w", o.path, err)
	}
	if st.Nlink == 0 {
		return fmt.Errorf("%s: the database file was deleted while in use", o.path)
	}
	var now syscall.Stat_t
	if err := syscall.Stat(o.path, &now); err != nil {
		return fmt.Errorf("%s: the database file is gone: %w", o.path, err)
	}
	if uint64(now.Dev) != o.dev || uint64(now.Ino) != o.ino {
		return fmt.Errorf("%s: the database file was replaced by another file while in use", o.path)
	}
	// Truncated or overwritten in place.
	head := make([]byte, len(sqliteMagic))
	if n, _ := o.f.ReadAt(head, 0); n < len(head) || string(head) != sqliteMagic {
		return fmt.Errorf("%s: the database file was truncated or overwritten while in use", o.path)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var wal syscall.Stat_t
	switch err := syscall.Stat(o.path+"-wal", &wal); {
	case err == nil && o.walIno == 0:
		o.walIno = uint64(wal.Ino)
	case err == nil && uint64(wal.Ino) != o.walIno:
		return fmt.Errorf("%s-wal: the database's write-ahead log was replaced while in use", o.path)
	case err != nil && o.walIno != 0:
		return fmt.Errorf("%s-wal: the database's write-ahead log was deleted while in use; what it held since the last checkpoint is lost unless it is restored", o.path)
	}
	return nil
}

func (o *owned) close() error { return o.f.Close() }

package noiseconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/flynn/noise"
)

// maxPlain is the largest plaintext that fits in one frame.
const maxPlain = MaxFrame - MinFrame

// ReadFrame reads one frame from r and returns its body (the ciphertext), reusing buf
// if it is large enough. It returns io.EOF if r ends before the frame starts, an error
// wrapping io.ErrUnexpectedEOF if it ends inside one, and errors wrapping
// ErrFrameTooLarge or ErrFrameTooSmall for lengths outside [MinFrame, MaxFrame], in
// which case it has read only the length.
func ReadFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("reading frame length: %w", err)
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n > MaxFrame:
		return nil, fmt.Errorf("frame of %d bytes, limit %d: %w", n, MaxFrame, ErrFrameTooLarge)
	case n < MinFrame:
		return nil, fmt.Errorf("frame of %d bytes, minimum %d: %w", n, MinFrame, ErrFrameTooSmall)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading frame of %d bytes: %w", n, err)
	}
	return buf, nil
}

// ReadMsgFrom reads one message (4-byte big-endian length, then the bytes) from a
// decrypted stream. It returns io.EOF if r ends before the message starts, an error
// wrapping io.ErrUnexpectedEOF if it ends inside one, and one wrapping
// ErrMessageTooLarge, having read only the length, if the length is over limit. It
// allocates as the bytes arrive, not as the length announces.
func ReadMsgFrom(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("reading message length: %w", err)
		}
		return nil, err
	}
	n := uint64(binary.BigEndian.Uint32(hdr[:]))
	if limit < 0 || n > uint64(limit) {
		return nil, fmt.Errorf("message of %d bytes, limit %d: %w", n, limit, ErrMessageTooLarge)
	}
	buf := make([]byte, min(int(n), 64<<10))
	read := 0
	for {
		m, err := io.ReadFull(r, buf[read:])
		read += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("reading message of %d bytes (got %d): %w", n, read, err)
		}
		if read == int(n) {
			return buf, nil
		}
		buf = append(buf, make([]byte, min(int(n)-read, len(buf)))...)
	}
}

// appendFrames encrypts plain with cs as frames of at most MaxFrame bytes and appends
// them to out. An empty plain gives no frame.
func appendFrames(out []byte, cs *noise.CipherState, plain []byte) ([]byte, error) {
	for len(plain) > 0 {
		chunk := plain[:min(len(plain), maxPlain)]
		plain = plain[len(chunk):]
		start := len(out) + 4
		out = append(out, 0, 0, 0, 0)
		var err error
		out, err = cs.Encrypt(out, nil, chunk)
		if err != nil {
			return nil, fmt.Errorf("encrypting frame: %w", err)
		}
		binary.BigEndian.PutUint32(out[start-4:], uint32(len(out)-start))
	}
	return out, nil
}

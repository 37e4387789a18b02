package proxy

import (
	"io"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// accessEntry is one per-request access line.
type accessEntry struct {
	time     time.Time
	method   string
	path     string
	status   int
	decision string
	user     string
	client   netip.Addr
	duration time.Duration
}

// accessLog writes access lines to w, one Write per line. The bytes are
// exactly what slog's JSONHandler writes for the same record (a test holds
// the two to that), so log pipelines see one format; going around slog
// saves its Record, its caller lookup and its attribute handling, which
// together cost ~4 µs on every proxied request.
type accessLog struct {
	w     io.Writer
	bufs  sync.Pool // *[]byte
	stamp atomic.Pointer[stamp]
}

// stamp is the latest access line's time to the second, formatted: every
// line within that second reuses it and formats only its fraction (the
// date and time cost most of a line's formatting).
type stamp struct {
	sec    int64
	loc    *time.Location
	prefix []byte // "2006-01-02T15:04:05"
	zone   []byte // "Z" or "+01:00"
}

func newAccessLog(w io.Writer) *accessLog {
	if w == nil {
		return nil
	}
	return &accessLog{w: w}
}

func (l *accessLog) write(e *accessEntry) {
	bp, _ := l.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, 512)
		bp = &b
	}
	b := appendAccessLine((*bp)[:0], e, &l.stamp)
	_, _ = l.w.Write(b) // as slog does: a log line that cannot be written is dropped
	if cap(b) <= 4<<10 {
		*bp = b
		l.bufs.Put(bp)
	}
}

// appendAccessLine appends e as slog.JSONHandler would format
// LogAttrs(ctx, slog.LevelInfo, "request", method, path, status, decision,
// user, client_ip, duration, duration_ms), its time through last (nil: no
// reuse).
func appendAccessLine(b []byte, e *accessEntry, last *atomic.Pointer[stamp]) []byte {
	b = append(b, `{"time":"`...)
	b = appendTime(b, e.time, last)
	b = append(b, `","level":"INFO","msg":"request","method":`...)
	b = appendJSONString(b, e.method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"decision":`...)
	b = appendJSONString(b, e.decision)
	b = append(b, `,"user":`...)
	b = appendJSONString(b, e.user)
	b = append(b, `,"client_ip":"`...)
	if e.client.IsValid() {
		b = e.client.AppendTo(b) // an address needs no escaping
	}
	// duration is in nanoseconds and says no unit: kept for one minor
	// version beside duration_ms (docs/operations.md), then dropped.
	b = append(b, `","duration":`...)
	b = strconv.AppendInt(b, int64(e.duration), 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, e.duration)
	return append(b, "}\n"...)
}

// appendTime appends t as t.AppendFormat(b, time.RFC3339Nano) does, the
// part to the second and the zone taken from last when t falls in the same
// second and location (and kept there for the next line when not).
func appendTime(b []byte, t time.Time, last *atomic.Pointer[stamp]) []byte {
	if last == nil {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	sec, loc := t.Unix(), t.Location()
	s := last.Load()
	if s == nil || s.sec != sec || s.loc != loc {
		if y := t.Year(); y < 0 || y > 9999 {
			return t.AppendFormat(b, time.RFC3339Nano) // beyond RFC 3339's years: as the library prints
		}
		whole := t.AppendFormat(nil, time.RFC3339) // to the second: "2006-01-02T15:04:05" and the zone
		s = &stamp{sec: sec, loc: loc, prefix: whole[:19], zone: whole[19:]}
		last.Store(s)
	}
	b = append(b, s.prefix...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, s.zone...)
}

// appendMillis appends d in milliseconds to the microsecond, as
// encoding/json (and so slog) writes float64(d.Microseconds())/1000: the
// shortest decimal, which for three decimals is the exact one with its
// trailing zeros dropped. Integer work: the shortest-float search cost the
// access line about a thousand instructions.
func appendMillis(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us >= 1<<53 || us <= -1<<53 { // beyond float64's integers (285 years): as the float prints
		return strconv.AppendFloat(b, float64(us)/1000, 'f', -1, 64)
	}
	if us < 0 {
		b = append(b, '-')
		us = -us
	}
	b = strconv.AppendInt(b, us/1000, 10)
	if f := us % 1000; f != 0 {
		digits := [4]byte{'.', byte('0' + f/100), byte('0' + f/10%10), byte('0' + f%10)}
		n := 4
		for digits[n-1] == '0' {
			n--
		}
		b = append(b, digits[:n]...)
	}
	return b
}

// appendJSONString appends s quoted with slog's JSON escaping: quotes,
// backslashes and control characters escaped, invalid UTF-8 as U+FFFD,
// U+2028 and U+2029 escaped, and HTML characters left as they are.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

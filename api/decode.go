package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/shoal-ci/shoal/errs"
)

// decode reads a JSON body strictly: unknown fields, duplicate keys and data after the document are errors, so
// typos and smuggled values do not pass silently; a body over the route's limit answers 413.
func decode(r *http.Request, v any) error {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return errs.New(errs.TooLarge, "the request body is larger than %d bytes, the most this route takes", tooLarge.Limit)
		}
		return errs.New(errs.BadRequest, "read the request body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return errs.New(errs.BadRequest, "the request needs a JSON body")
	}
	if err := CheckJSON(data); err != nil {
		return errs.New(errs.BadRequest, "request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errs.New(errs.BadRequest, "request body: %v", err)
	}
	return nil
}

// CheckJSON reports the first duplicate object key in data, or data after its first JSON value.
func CheckJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := checkValue(dec, ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON document: send one JSON value")
	}
	return nil
}

// checkValue reads one value from dec, failing on a key that appears twice in one object.
func checkValue(dec *json.Decoder, at string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := kt.(string)
			if seen[key] {
				return fmt.Errorf("key %q appears twice in %s", key, orTop(at))
			}
			seen[key] = true
			if err := checkValue(dec, at+"."+key); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
		return err
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := checkValue(dec, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	}
	return nil
}

func orTop(at string) string {
	if at == "" {
		return "the body"
	}
	return strings.TrimPrefix(at, ".")
}

;; sum_and_greet: {"name":"Ada","a":2,"b":3} -> {"message":"Hello Ada","sum":5}
;; (the same answer as the builtin handler of that name).
;;
;; A tiny JSON reader, not a full one. Its limits:
;; - "name" must be a string without escapes or control characters (a
;;   backslash in it is refused rather than copied, so the output is always
;;   valid JSON); other UTF-8 passes through;
;; - "a" and "b" must be non-negative integers of at most 9 digits (no sign,
;;   fraction or exponent; anything after the digits is ignored);
;; - a key is found wherever `"key"` is followed by `:`, so a nested object's
;;   keys count too; keys are matched exactly (no escapes);
;; - the payload must be under 60 KiB.
;; Anything else: a message on stderr and exit code 1.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  ;; Memory: 0 an iovec {buf, len}; 8 the count a call returns; 16..32
  ;; scratch for digits; 64.. constant text; 1024 the input (60 KiB);
  ;; 62464 the output.
  (memory (export "memory") 2)
  (data (i32.const 64) "\"name\"")
  (data (i32.const 72) "\"a\"")
  (data (i32.const 76) "\"b\"")
  (data (i32.const 80) "{\"message\":\"Hello ")
  (data (i32.const 100) "\",\"sum\":")
  (data (i32.const 110) "}")
  (data (i32.const 128)
    "sum_and_greet: expected {\"name\":\"Ada\",\"a\":2,\"b\":3} (see the limits in sum_and_greet.wat)\n")
  (data (i32.const 256) "sum_and_greet: the payload must be under 60 KiB\n")

  (global $len (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 62464))

  (func (export "_start")
    (local $name i32)
    (local $end i32)
    (local $c i32)
    (local $a i32)
    (local $b i32)
    (call $read_all)
    ;; "name": a string; $name..$end is its text.
    (local.set $name (call $find_value (i32.const 64) (i32.const 6)))
    (if (i32.ne (call $at (local.get $name)) (i32.const 34))
      (then (call $usage)))
    (local.set $name (i32.add (local.get $name) (i32.const 1)))
    (local.set $end (local.get $name))
    (block $closed
      (loop $chars
        (local.set $c (call $at (local.get $end)))
        (br_if $closed (i32.eq (local.get $c) (i32.const 34)))
        ;; The end of the input (-1), a control character, or a backslash.
        (if (i32.or (i32.lt_s (local.get $c) (i32.const 32))
                    (i32.eq (local.get $c) (i32.const 92)))
          (then (call $usage)))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $chars)))
    (local.set $a (call $parse_uint (call $find_value (i32.const 72) (i32.const 3))))
    (local.set $b (call $parse_uint (call $find_value (i32.const 76) (i32.const 3))))
    (if (i32.or (i32.lt_s (local.get $a) (i32.const 0))
                (i32.lt_s (local.get $b) (i32.const 0)))
      (then (call $usage)))
    (call $append (i32.const 80) (i32.const 18))
    (call $append (i32.add (i32.const 1024) (local.get $name))
                  (i32.sub (local.get $end) (local.get $name)))
    (call $append (i32.const 100) (i32.const 8))
    (call $append_uint (i32.add (local.get $a) (local.get $b)))
    (call $append (i32.const 110) (i32.const 1))
    (call $write_all (i32.const 62464) (i32.sub (global.get $out) (i32.const 62464))))

  ;; Reads all of stdin into the input buffer.
  (func $read_all
    (loop $more
      (i32.store (i32.const 0) (i32.add (i32.const 1024) (global.get $len)))
      (i32.store (i32.const 4) (i32.sub (i32.const 61440) (global.get $len)))
      (if (i32.eqz (i32.load (i32.const 4)))
        (then (call $fail (i32.const 256) (i32.const 48))))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $usage)))
      (global.set $len (i32.add (global.get $len) (i32.load (i32.const 8))))
      (br_if $more (i32.load (i32.const 8)))))

  ;; The input's byte at $i, or -1 past its end (or for $i = -1).
  (func $at (param $i i32) (result i32)
    (if (i32.ge_u (local.get $i) (global.get $len))
      (then (return (i32.const -1))))
    (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))

  (func $skip_ws (param $i i32) (result i32)
    (local $c i32)
    (loop $more
      (local.set $c (call $at (local.get $i)))
      (if (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32))
                          (i32.eq (local.get $c) (i32.const 9)))
                  (i32.or (i32.eq (local.get $c) (i32.const 10))
                          (i32.eq (local.get $c) (i32.const 13))))
        (then
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $more))))
    (local.get $i))

  ;; 1 if the input at $i holds the $n bytes at $key.
  (func $equal (param $i i32) (param $key i32) (param $n i32) (result i32)
    (local $k i32)
    (block $differ
      (loop $bytes
        (if (i32.ge_u (local.get $k) (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (call $at (i32.add (local.get $i) (local.get $k)))
                               (i32.load8_u (i32.add (local.get $key) (local.get $k)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $bytes)))
    (i32.const 0))

  ;; Where the value of the key at $key ($n bytes, quotes included) starts,
  ;; or -1.
  (func $find_value (param $key i32) (param $n i32) (result i32)
    (local $i i32)
    (local $j i32)
    (block $none
      (loop $scan
        (br_if $none (i32.gt_u (i32.add (local.get $i) (local.get $n)) (global.get $len)))
        (if (call $equal (local.get $i) (local.get $key) (local.get $n))
          (then
            (local.set $j (call $skip_ws (i32.add (local.get $i) (local.get $n))))
            (if (i32.eq (call $at (local.get $j)) (i32.const 58))
              (then (return (call $skip_ws (i32.add (local.get $j) (i32.const 1))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i32.const -1))

  ;; The integer of 1 to 9 digits at $i, or -1.
  (func $parse_uint (param $i i32) (result i32)
    (local $value i32)
    (local $digits i32)
    (local $d i32)
    (block $end
      (loop $digit
        (local.set $d (i32.sub (call $at (local.get $i)) (i32.const 48)))
        (br_if $end (i32.ge_u (local.get $d) (i32.const 10)))
        (if (i32.eq (local.get $digits) (i32.const 9)) (then (return (i32.const -1))))
        (local.set $value (i32.add (i32.mul (local.get $value) (i32.const 10)) (local.get $d)))
        (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digit)))
    (if (i32.eqz (local.get $digits)) (then (return (i32.const -1))))
    (local.get $value))

  (func $append (param $src i32) (param $n i32)
    (memory.copy (global.get $out) (local.get $src) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))

  ;; Appends $v in decimal.
  (func $append_uint (param $v i32)
    (local $p i32)
    (local.set $p (i32.const 32))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digits (local.get $v)))
    (call $append (local.get $p) (i32.sub (i32.const 32) (local.get $p))))

  ;; Writes $len bytes at $ptr to stdout, however many calls it takes.
  (func $write_all (param $ptr i32) (param $len i32)
    (local $written i32)
    (loop $more
      (i32.store (i32.const 0) (local.get $ptr))
      (i32.store (i32.const 4) (local.get $len))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 1))))
      (local.set $written (i32.load (i32.const 8)))
      (local.set $ptr (i32.add (local.get $ptr) (local.get $written)))
      (local.set $len (i32.sub (local.get $len) (local.get $written)))
      (br_if $more (local.get $len))))

  (func $usage
    (call $fail (i32.const 128) (i32.const 89)))

  ;; Writes the $len bytes at $ptr to stderr and exits with code 1.
  (func $fail (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 1))))

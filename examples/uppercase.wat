;; uppercase: copies stdin to stdout with ASCII letters a-z made A-Z (other
;; bytes, UTF-8 included, pass through unchanged).
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  ;; 0: an iovec {buf, len}; 8: the count a call returns; 1024: the buffer.
  (memory (export "memory") 2)

  (func (export "_start")
    (local $n i32)
    (loop $chunks
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 1))))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.eqz (local.get $n)) (then (return)))
      (call $upper (i32.const 1024) (local.get $n))
      (call $write_all (i32.const 1024) (local.get $n))
      (br $chunks)))

  ;; Uppercases the len bytes at ptr in place.
  (func $upper (param $ptr i32) (param $len i32)
    (local $end i32)
    (local $byte i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $bytes
        (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
        (local.set $byte (i32.load8_u (local.get $ptr)))
        ;; byte - 'a' < 26 (unsigned): a lowercase letter.
        (if (i32.lt_u (i32.sub (local.get $byte) (i32.const 97)) (i32.const 26))
          (then (i32.store8 (local.get $ptr) (i32.sub (local.get $byte) (i32.const 32)))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $bytes))))

  ;; Writes len bytes at ptr to stdout, however many calls it takes.
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
      (br_if $more (local.get $len)))))

;; echo: copies stdin (the payload) to stdout (the output).
;;
;; Register it with language "wasm" (the WAT text is turned into a binary
;; module at registration). Reads and writes in 64 KiB chunks, so any payload
;; size works.
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
      ;; 0 bytes read: the end of the payload.
      (if (i32.eqz (local.get $n)) (then (return)))
      (call $write_all (i32.const 1024) (local.get $n))
      (br $chunks)))

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

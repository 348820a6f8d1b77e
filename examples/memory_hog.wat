;; memory_hog: grows its memory 1 MiB at a time until the runtime refuses
;; (64 MiB per execution by default), then says so on stderr and exits with
;; code 1. The execution fails naming the memory limit.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  (memory (export "memory") 1)
  (data (i32.const 16) "memory_hog: memory.grow was refused\n")

  (func (export "_start")
    ;; memory.grow returns -1 when refused; 16 pages of 64 KiB = 1 MiB.
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 36))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 1))))

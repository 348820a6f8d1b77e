;; infinite_loop: never ends on its own. The execution's timeout (or a
;; cancel) stops it within a few milliseconds: compiled code checks the
;; engine's epoch at every loop iteration.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever
      (br $forever))))

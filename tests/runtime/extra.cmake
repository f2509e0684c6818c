# Two shared objects function_bounds_test loads and unloads (dlclose must
# leave no stale cache entry).
foreach(object a b)
  add_library(punch_test_object_${object} MODULE ${CMAKE_CURRENT_LIST_DIR}/objects/object_${object}.cpp)
  target_link_libraries(punch_test_object_${object} PRIVATE punch_options)
  add_dependencies(punch_runtime_tests punch_test_object_${object})
endforeach()
target_compile_definitions(punch_runtime_tests PRIVATE
  PUNCH_TEST_OBJECT_A="$<TARGET_FILE:punch_test_object_a>" PUNCH_TEST_OBJECT_B="$<TARGET_FILE:punch_test_object_b>")

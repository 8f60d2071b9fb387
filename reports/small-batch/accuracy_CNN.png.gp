set terminal pngcairo size 800,500 font 'sans,10'
set output 'accuracy_CNN.png'
set datafile separator ','
set title 'Test accuracy (running averages) against batch size, CNN' noenhanced
set xlabel 'mini-batch size'
set ylabel 'test accuracy'
set grid
set key below noenhanced
set format x '%g'
set logscale x 2
plot 'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / BN' ? column(7) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'BN', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / Batch Renorm' ? column(7) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'Batch Renorm', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / Ghost BN' ? column(7) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'Ghost BN', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / GroupNorm' ? column(7) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'GroupNorm', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / LayerNorm' ? column(7) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'LayerNorm', \
     'results.csv' every ::1 using 4:(strcol(1) eq 'CNN / none' ? column(7) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'none'
